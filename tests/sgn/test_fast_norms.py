"""Tests for sam_tutorial.sgn.fast_norms: per-sample squared gradient norms from one backward pass equal
the norms of per-sample gradients computed one sample at a time, layer type by layer type."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam_tutorial.sgn.fast_norms import per_sample_sq_norms, supports_fast_norms
from sam_tutorial.sgn.functional import eval_mode

CE = nn.CrossEntropyLoss(reduction="none")


def _loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        g = torch.autograd.grad(CE(model(x[i : i + 1]), y[i : i + 1]).sum(), params)
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    g = torch.stack(rows)
    return g.square().sum(1), g.mean(0)


LAYERS = {
    # a sequence Linear whose Gram form (T (p + q) < p q) and materialised form both get used
    "linear-seq-gram": (
        nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)),
        (7, 2, 16),
    ),
    "linear-seq-direct": (
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(24, 3)),
        (7, 8, 2),
    ),
    "conv1d-bn": (
        nn.Sequential(
            nn.Conv1d(2, 3, 3, stride=2, dilation=2), nn.BatchNorm1d(3), nn.Flatten(), nn.Linear(12, 3)
        ),
        (7, 2, 11),
    ),
    "conv2d-gn-ln": (
        nn.Sequential(
            nn.Conv2d(2, 4, 3, padding="same"),
            nn.GroupNorm(2, 4),
            nn.Flatten(),
            nn.LayerNorm(64),
            nn.Linear(64, 3),
        ),
        (7, 2, 4, 4),
    ),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_norms_equal_per_sample_gradients(name: str) -> None:
    torch.manual_seed(0)
    model, shape = LAYERS[name]
    model = model.double().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x, y = torch.randn(*shape, dtype=torch.float64), torch.randint(0, 3, (shape[0],))
    sq, mean_grad = per_sample_sq_norms(model, CE, x, y)
    ref_sq, ref_mean = _loop(model, x, y)
    torch.testing.assert_close(sq, ref_sq, rtol=1e-12, atol=0)
    torch.testing.assert_close(mean_grad, ref_mean, rtol=0, atol=1e-14)
    assert all(p.grad is None for p in model.parameters())


def test_support_check() -> None:
    bn = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert not supports_fast_norms(bn.train())  # batch statistics couple the samples
    with eval_mode(bn):
        assert supports_fast_norms(bn)
    assert not supports_fast_norms(nn.Conv1d(4, 4, 3, groups=2))
    assert not supports_fast_norms(nn.Conv1d(2, 2, 2, padding="same"))  # asymmetric padding
    assert not supports_fast_norms(nn.Conv1d(2, 2, 3, padding=1, padding_mode="circular"))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    assert not supports_fast_norms(frozen)  # nothing to differentiate
    with pytest.raises(ValueError, match="not supported"):
        per_sample_sq_norms(nn.Embedding(3, 2), CE, torch.zeros(2).long(), torch.zeros(2).long())
