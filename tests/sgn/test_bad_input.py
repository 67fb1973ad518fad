"""Bad input (stochastic gradient noise): a BatchNorm model in training mode, targets that do
not suit the loss, inputs the model cannot take. Each gets the package's own ``ValueError`` naming the
problem, and the model (weights, buffers, train/eval flags) is left as it was."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from sam_tutorial.sgn.fisher import fisher_trace
from sam_tutorial.sgn.monte_carlo import batch_grads
from sam_tutorial.sgn.per_sample import per_sample_grads
from sam_tutorial.sgn.variance import empirical_fisher_trace, trace_V

CE = nn.CrossEntropyLoss(reduction="none")


def _bn_model(kind: str) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    if kind == "1d":
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))
        x = torch.randn(8, 3)
    else:  # BatchNorm2d: torch itself would quietly normalise each image by its own statistics
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 3))
        x = torch.randn(8, 1, 6, 6)
    return model.train(), x, torch.randint(0, 3, (8,))


def _snapshot(model: nn.Module) -> tuple[list[Tensor], list[bool]]:
    return [t.clone() for t in model.state_dict().values()], [m.training for m in model.modules()]


NOISE: dict[str, Callable[..., Tensor]] = {
    "per_sample_grads": lambda m, x, y, **k: per_sample_grads(m, CE, x, y, **k),
    "trace_V": lambda m, x, y, **k: trace_V(m, CE, x, y, **k),
    "trace_V vmap": lambda m, x, y, **k: trace_V(m, CE, x, y, method="vmap", **k),
    "empirical_fisher_trace": lambda m, x, y, **k: empirical_fisher_trace(m, CE, x, y, **k),
    "fisher_trace": lambda m, x, y, **k: fisher_trace(m, x, **k),
}


@pytest.mark.parametrize("kind", ["1d", "2d"])
@pytest.mark.parametrize("name", list(NOISE))
def test_train_mode_batchnorm_gets_the_package_error(name: str, kind: str) -> None:
    model, x, y = _bn_model(kind)
    before = _snapshot(model)
    with pytest.raises(ValueError, match="BatchNorm layer '1' is in training mode") as info:
        NOISE[name](model, x, y, eval_mode=False)
    assert "eval_mode=True (the default) or call model.eval()" in str(info.value)
    after = _snapshot(model)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0])) and before[1] == after[1]
    assert NOISE[name](model, x, y).isfinite().all()  # the default (eval mode) works on the same model


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_batch_grads_with_train_mode_batchnorm_uses_batch_statistics(kind: str) -> None:
    """Mini-batch gradients through batch statistics are defined: computed (a loop, as vmap cannot),
    equal to autograd on each batch, and the running statistics untouched."""
    model, x, y = _bn_model(kind)
    batches = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [1, 3, 5, 7]])
    before = _snapshot(model)
    got = batch_grads(model, CE, x, y, batches, eval_mode=False)
    for row, idx in zip(got, batches):
        clone = copy.deepcopy(model).train()
        params = list(clone.parameters())
        grads = torch.autograd.grad(CE(clone(x[idx]), y[idx]).mean(), params)
        torch.testing.assert_close(row, torch.cat([g.reshape(-1) for g in grads]))
    for buffer, old in zip(model.state_dict().values(), before[0]):
        assert torch.equal(buffer, old)


NET = nn.Linear(3, 2)
X, YS = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])


@pytest.mark.parametrize(("inputs", "targets", "message"), [
    (X, YS.float(), r"loss_fn failed on outputs torch.float32 \[.*2\] and targets torch.float32 \[.*\]"),
    (X, YS[:, None], r"loss_fn failed on outputs .* and targets torch.int64 \[.*, 1\] .*target"),
    (X, YS + 2, r"targets must suit loss_fn, e.g. int64 class indices in \[0, 2\)"),
    (X.double(), YS, r"model failed on inputs torch.float64 \[.*3\] .*inputs must have the shape and dtype"),
    (torch.randn(6, 4), YS, r"model failed on inputs torch.float32 \[.*4\]"),
])
@pytest.mark.parametrize("method", ["hooks", "vmap"])
def test_targets_and_inputs_that_do_not_suit_name_shapes_and_dtypes(inputs: Tensor, targets: Tensor,
                                                                    message: str, method: str) -> None:
    before = NET.weight.clone()
    with pytest.raises(ValueError, match=message):
        trace_V(NET, CE, inputs, targets, method=method)
    with pytest.raises(ValueError, match=message):
        per_sample_grads(NET, CE, inputs, targets)
    assert torch.equal(before, NET.weight) and NET.weight.grad is None
