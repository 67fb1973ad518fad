"""Tests for sam_tutorial.sgn.functional: the flat-parameter view of a model agrees with the model, and
neither it nor eval_mode changes the model's state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam_tutorial.sgn.functional import eval_mode, flat_params, functional_losses, functional_outputs


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2)).double()
    model[3].bias.requires_grad_(False)
    return model


def test_flat_view_matches_the_model_and_skips_frozen_parameters() -> None:
    model = _model().eval()
    w = flat_params(model)
    assert w.numel() == sum(p.numel() for p in model.parameters() if p.requires_grad) == 3 * 4 + 4 + 4 + 4 + 8
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(functional_outputs(model)(w, x), model(x), rtol=0, atol=0)
    # moving w moves exactly the trainable parameters, in parameters() order
    bumped = functional_outputs(model)(
        w + torch.nn.functional.one_hot(torch.tensor(w.numel() - 1), w.numel()), x
    )
    with torch.no_grad():
        model[3].weight[-1, -1] += 1.0
    torch.testing.assert_close(bumped, model(x), rtol=0, atol=1e-14)


def test_eval_mode_restores_every_flag_and_batch_statistics_never_leak() -> None:
    model = _model().train()
    model[2].eval()  # a mixed state must come back as it was
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, dtype=torch.float64)
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == flags
    losses = functional_losses(model, lambda out, y: (out - y).square().sum(-1))
    torch.func.grad(lambda w: losses(w, x, torch.zeros(6, 2, dtype=torch.float64)).mean())(flat_params(model))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # BatchNorm in training mode ran on copies of its buffers


def test_loss_shape_is_checked() -> None:
    model = _model().eval()
    losses = functional_losses(model, nn.MSELoss())
    with pytest.raises(ValueError, match="per-sample losses"):
        losses(
            flat_params(model), torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
        )
