"""Models vmap or forward-mode AD cannot run: m-SAM's automatic backend falls back to the loop once and
says why, a forced vmap names the loop; RW-SAM's exact score works on a compiled model and names the
finite difference where it cannot run. And the vmap backend's cost: its own work does not grow with
the number of parameter tensors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from sam_tutorial.engine.cost import count_ops
from sam_tutorial.optim import MSAM, RWSAM, SAM
from tests.optim.helpers import CE, batch, mlp, sgd


class Checkpointed(nn.Module):
    """An MLP whose hidden layer runs under activation checkpointing (torch's recommended mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](checkpoint(lambda t: self.net[1](self.net[0](t)), x, use_reentrant=False))


class AutoAsOnCuda(MSAM):
    """``backend="auto"`` as it resolves on CUDA (vmap until it fails), runnable on the CPU."""

    def resolved_backend(self, device: torch.device) -> str:
        return "vmap" if self.vmap_fallback_reason is None else "loop"


def test_auto_falls_back_to_the_loop_once_with_a_warning_naming_why() -> None:
    model, reference = Checkpointed(), Checkpointed()
    opt = AutoAsOnCuda(model, sgd(model), rho=0.05, m=4)
    ref = MSAM(reference, sgd(reference), rho=0.05, m=4, backend="loop")
    x, y = batch()
    with pytest.warns(RuntimeWarning, match="vmap cannot run this model \\(RuntimeError: .*backend='loop'"):
        stats = opt.step(x, y, CE)
    assert opt.vmap_fallback_reason is not None and not bool(stats.skipped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the next step goes straight to the loop
        opt.step(x, y, CE)
    for _ in range(2):
        ref.step(x, y, CE)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, atol=1e-14, rtol=0)


def test_a_forced_vmap_names_the_loop_backend() -> None:
    model = Checkpointed()
    opt = MSAM(model, sgd(model), rho=0.05, m=4, backend="vmap")
    x, y = batch()
    with pytest.raises(RuntimeError, match="backend='vmap'\\) cannot run this model.*use backend='loop'"):
        opt.step(x, y, CE)


def test_auto_uses_the_loop_for_a_compiled_model() -> None:
    model = torch.compile(mlp(), backend="eager")
    opt = MSAM(model, sgd(model), rho=0.05, m=4)
    assert opt.resolved_backend(torch.device("cuda")) == "loop"  # vmap would run it eagerly
    plain = mlp()
    assert MSAM(plain, sgd(plain), rho=0.05, m=4).resolved_backend(torch.device("cuda")) == "vmap"


def test_exact_scores_run_on_a_compiled_model_and_equal_the_eager_ones() -> None:
    model, compiled_from = mlp(), mlp()
    compiled = torch.compile(compiled_from, backend="aot_eager")
    x, y = batch()
    a = RWSAM(model, sgd(model), rho=0.05, lam=1.0, score="exact", seed=0)
    b = RWSAM(compiled, sgd(compiled_from), rho=0.05, lam=1.0, score="exact", seed=0)
    a.step(x, y, CE)
    b.step(x, y, CE)
    assert a.last_scores is not None and b.last_scores is not None
    torch.testing.assert_close(a.last_scores, b.last_scores, atol=1e-12, rtol=0)
    for p, q in zip(model.parameters(), compiled_from.parameters()):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=0)


def test_exact_scores_under_activation_checkpointing_name_the_finite_difference() -> None:
    model = Checkpointed()
    opt = RWSAM(model, sgd(model), rho=0.05, lam=1.0, score="exact", seed=0)
    x, y = batch()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="use score='finite-difference'"):
        opt.step(x, y, CE)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    RWSAM(model, sgd(model), rho=0.05, lam=1.0, seed=0).step(x, y, CE)  # the named alternative runs


def _deep(layers: int) -> nn.Module:
    torch.manual_seed(0)
    mods: list[nn.Module] = [nn.Linear(5, 8)]
    for _ in range(layers):
        mods += [nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 8)]
    mods.append(nn.Linear(8, 3))
    return nn.Sequential(*mods).double()


def _kernels(make: type, model: nn.Module, **options: object) -> int:
    opt = make(model, sgd(model), rho=0.05, **options)
    x, y = batch(n=32)
    for _ in range(2):
        opt.step(x, y, CE)
    return count_ops(lambda: opt.step(x, y, CE)).kernels


def test_the_vmap_backend_adds_a_constant_number_of_ops_per_layer_beyond_sam() -> None:
    """m-SAM vmap (8 micro-batches) minus SAM, per added layer (3 parameter tensors, 3 buffers): the
    extra ops of the batched forward/backward per layer stay fixed, and the engine's own work adds
    nothing per parameter tensor (it works on one flat [k, d] matrix)."""
    extra = [_kernels(MSAM, _deep(n), m=4, backend="vmap") - _kernels(SAM, _deep(n)) for n in (2, 4, 8)]
    per_layer = [(extra[1] - extra[0]) / 2, (extra[2] - extra[1]) / 4]
    assert per_layer[0] == per_layer[1]
    vmap, sam = _kernels(MSAM, _deep(8), m=4, backend="vmap"), _kernels(SAM, _deep(8))
    assert vmap <= 2.0 * sam, (vmap, sam)
