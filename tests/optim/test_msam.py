"""m-SAM: m = B is SAM, loop = vmap, the closed form of m-USAM, pass counts, BatchNorm per backend."""

from __future__ import annotations

import copy

import pytest
import torch

from sam_tutorial.optim import MSAM, SAM
from tests.optim.helpers import (
    CE,
    PassCounter,
    assert_params_equal,
    batch,
    half_squared,
    lsq_grad,
    mlp,
    regression,
    sgd,
)


@pytest.mark.parametrize("backend", ["loop", "vmap"])
@pytest.mark.parametrize("normalize", [True, False])
def test_m_equal_to_the_batch_is_sam(backend: str, normalize: bool) -> None:
    a, b = mlp(), mlp()
    opt_a = MSAM(a, sgd(a), rho=0.1, m=16, normalize=normalize, backend=backend)
    opt_b = SAM(b, sgd(b), rho=0.1, normalize=normalize)
    for s in range(3):
        x, y = batch(seed=s)
        sa, sb = opt_a.step(x, y, CE), opt_b.step(x, y, CE)
        for u, v in zip(sa, sb):
            torch.testing.assert_close(u, v, atol=1e-12, rtol=0)
    assert_params_equal(a, b, atol=1e-12)


@pytest.mark.parametrize("m", [1, 4, 8])
@pytest.mark.parametrize("normalize", [True, False])
def test_loop_and_vmap_backends_agree_in_float64(m: int, normalize: bool) -> None:
    a, b = mlp(), mlp()
    opt_a = MSAM(a, sgd(a), rho=0.2, m=m, normalize=normalize, backend="loop")
    opt_b = MSAM(b, sgd(b), rho=0.2, m=m, normalize=normalize, backend="vmap", micro_batches_per_call=3)
    for s in range(3):
        x, y = batch(seed=s)
        sa, sb = opt_a.step(x, y, CE), opt_b.step(x, y, CE)
        for u, v in zip(sa, sb):
            torch.testing.assert_close(u, v, atol=1e-10, rtol=0)
    assert_params_equal(a, b, atol=1e-10)


@pytest.mark.parametrize("backend", ["loop", "vmap"])
@pytest.mark.parametrize("normalize", [True, False])
def test_m_usam_and_m_sam_match_the_closed_form(backend: str, normalize: bool) -> None:
    """w − η (1/k) Σ_j ∇f_{I_j}(w + ρ g_j[/‖g_j‖]) with g_j = ∇f_{I_j}(w), gradients by hand."""
    model, x, y = regression(n=12)
    w = model.weight.detach().clone().squeeze(0)
    lr, rho, m = 0.1, 0.3, 3
    total = torch.zeros_like(w)
    for j in range(12 // m):
        xs, ys = x[j * m : (j + 1) * m], y[j * m : (j + 1) * m]
        g = lsq_grad(w, xs, ys)
        e = rho * g / (g.norm() if normalize else 1.0)
        total += lsq_grad(w + e, xs, ys) / (12 // m)
    opt = MSAM(model, torch.optim.SGD(model.parameters(), lr=lr), rho=rho, m=m,
               normalize=normalize, backend=backend)
    opt.step(x, y, half_squared)
    torch.testing.assert_close(model.weight.squeeze(0), w - lr * total, atol=1e-12, rtol=0)


@pytest.mark.parametrize("m", [2, 4, 16])
def test_loop_makes_2k_forward_and_2k_backward_passes(m: int) -> None:
    model = mlp()
    counter = PassCounter(model)
    MSAM(model, sgd(model), rho=0.05, m=m, backend="loop").step(*batch(), CE)
    k = 16 // m
    assert (counter.forward, counter.backward) == (2 * k, 2 * k)


def test_loop_batchnorm_makes_one_update_per_micro_batch_at_w() -> None:
    model = mlp(bn=True)
    reference = copy.deepcopy(model)
    x, y = batch()
    MSAM(model, sgd(model), rho=0.1, m=4, backend="loop").step(x, y, CE)
    for j in range(4):  # sequential train-mode forwards of the micro-batches at w
        reference(x[4 * j : 4 * (j + 1)])
    for a, b in zip(model.buffers(), reference.buffers()):
        assert torch.equal(a, b)
    assert int(model[1].num_batches_tracked) == 4


def test_vmap_batchnorm_makes_one_update_with_the_mean_micro_batch_statistics() -> None:
    model = mlp(bn=True)
    x, y = batch()
    updates = []
    for j in range(4):  # each micro-batch updates its own copy of the statistics
        copy_j = copy.deepcopy(model)
        copy_j(x[4 * j : 4 * (j + 1)])
        updates.append([b.clone() for b in copy_j.buffers()])
    MSAM(model, sgd(model), rho=0.1, m=4, backend="vmap").step(x, y, CE)
    for i, b in enumerate(model.buffers()):
        stacked = torch.stack([u[i] for u in updates])
        expected = stacked.mean(0) if b.is_floating_point() else stacked[0]
        torch.testing.assert_close(b, expected, atol=1e-14, rtol=0)


def test_both_backends_normalise_each_micro_batch_with_its_own_statistics() -> None:
    """With BatchNorm the gradients of the two backends agree (ghost batch norm); only the running
    statistics follow their documented rules."""
    a, b = mlp(bn=True), mlp(bn=True)
    x, y = batch()
    MSAM(a, sgd(a), rho=0.1, m=4, backend="loop").step(x, y, CE)
    MSAM(b, sgd(b), rho=0.1, m=4, backend="vmap").step(x, y, CE)
    assert_params_equal(a, b, atol=1e-12)


def test_auto_backend_picks_loop_on_cpu() -> None:
    model = mlp()
    opt = MSAM(model, sgd(model), rho=0.1, m=4)
    assert opt.resolved_backend(torch.device("cpu")) == "loop"
    assert opt.resolved_backend(torch.device("cuda")) == "vmap"


def test_vmap_runs_the_loop_under_autocast() -> None:
    """Under autocast (where functorch's batched backward fails on CUDA) the vmap backend takes the loop."""
    a, b = mlp(bn=True, dtype=torch.float32), mlp(bn=True, dtype=torch.float32)
    x, y = batch(dtype=torch.float32)
    opts = [MSAM(m, sgd(m), rho=0.1, m=4, backend=k) for m, k in ((a, "vmap"), (b, "loop"))]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for opt in opts:
            opt.step(x, y, CE)
    assert_params_equal(a, b)
    for u, v in zip(a.buffers(), b.buffers()):
        assert torch.equal(u, v)  # the loop's k sequential running-statistics updates
