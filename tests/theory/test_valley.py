"""The valley of chapter 4: closed forms against autograd, the package's drift and recursion."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import grad, hessian, jacrev

from sam_tutorial.sgn.batches import batch_grad_moments, batch_noise_coefficient
from sam_tutorial.sgn.variance import sgn_trace
from sam_tutorial.theory import sde
from sam_tutorial.theory.recursions import discrete_trajectory
from sam_tutorial.theory.valley import (
    ValleyProblem,
    expected_grad_norm,
    kind_count_law,
    predicted_u,
    simulate,
    usam_rate,
)

DT = torch.float64
POINTS = [(0.6, 0.1), (-0.3, 0.4), (0.0, -0.2), (0.9, 0.0)]


@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize("point", POINTS)
def test_loss_and_trace_V_closed_forms(copies, point):
    p = ValleyProblem(kappa=0.8, copies=copies)
    x = torch.tensor(point, dtype=DT)
    assert torch.allclose(p(x).mean(), p.loss(x))  # f does not depend on u
    g = jacrev(p)(x)
    assert torch.allclose(sgn_trace(g), p.trace_V(x))
    assert torch.allclose(g[:4], p.kind_grads(x))
    assert torch.allclose(grad(lambda z: sgn_trace(jacrev(p)(z)))(x), p.grad_trace_V(x))


@pytest.mark.parametrize("point", POINTS)
def test_half_grad_trace_V_is_covariance_of_hessians_and_gradients(point):
    # 1/2 grad tr V = Cov_i(H_i, grad f_i) = mean_i H_i g_i - H g, computed from per-sample Hessians
    p = ValleyProblem(kappa=1.3)
    x = torch.tensor(point, dtype=DT)
    g = jacrev(p)(x)  # [n, 2]
    h = hessian(p)(x)  # [n, 2, 2]
    cov = torch.einsum("nij,nj->i", h, g) / p.n - h.mean(0) @ g.mean(0)
    assert torch.allclose(0.5 * p.grad_trace_V(x), cov)


def test_the_valley_floor_has_one_hessian_and_changing_noise():
    p = ValleyProblem()
    for u in (-0.5, 0.0, 0.7):
        x = torch.tensor([u, 0.0], dtype=DT)
        h = hessian(lambda z: p(z).mean())(x)
        assert torch.allclose(h, torch.diag(torch.tensor([0.0, 1.0], dtype=DT)))
        assert torch.allclose(jacrev(p)(x).mean(0), torch.zeros(2, dtype=DT))
        assert p.trace_V(x).item() == pytest.approx(1.25 + u * u)


@pytest.mark.parametrize(("m", "replacement", "copies"), [(1, True, 1), (2, True, 1), (3, True, 1),
                                                          (2, False, 2), (5, False, 2)])
def test_expected_grad_norm_matches_the_index_set_enumeration(m, replacement, copies):
    p = ValleyProblem(kappa=0.9, copies=copies)
    x = torch.tensor([0.4, 0.15], dtype=DT)
    counts, probs = kind_count_law(m, replacement=replacement, copies=copies)
    assert probs.sum().item() == pytest.approx(1.0)
    assert torch.all(counts.sum(1) == m)
    package = batch_grad_moments(jacrev(p)(x), m, replacement=replacement, max_batches=100_000).norm
    ours = expected_grad_norm(p, x, m, replacement=replacement)
    assert ours.item() == pytest.approx(package.item(), rel=1e-12)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_package_drift_along_the_valley_is_the_closed_form(m):
    p = ValleyProblem(kappa=1.0)
    x = torch.tensor([0.6, 0.1], dtype=DT)
    rho, b = 0.1, 8
    usam = sde.drift(p, x, "m-usam", rho=rho, b=b, m=m, replacement=True)
    c_m = batch_noise_coefficient(p.n, m, replacement=True)
    assert usam[0].item() == pytest.approx(-0.5 * rho * c_m * p.grad_trace_V(x)[0].item(), rel=1e-12)
    sam = sde.drift(p, x, "m-sam", rho=rho, b=b, m=m, replacement=True)
    z = x.clone().requires_grad_(True)
    (gz,) = torch.autograd.grad(expected_grad_norm(p, z, m), z)
    assert sam[0].item() == pytest.approx(-rho * gz[0].item(), rel=1e-10)
    for variant in ("sgd", "n-usam", "n-sam"):
        along = sde.drift(p, x, variant, rho=rho, b=b, replacement=True)[0]
        assert along.item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize(("variant", "m"), [("sgd", None), ("usam", None), ("n-usam", None), ("m-usam", 2),
                                            ("sam", None), ("n-sam", None), ("m-sam", 1)])
@pytest.mark.parametrize("replacement", [True, False])
def test_simulate_is_the_package_recursion(variant, m, replacement):
    p = ValleyProblem(kappa=1.0, copies=2)
    x0 = torch.tensor([0.7, 0.05], dtype=DT)
    kw = dict(eta=0.1, rho=0.2, b=4, m=m, n_steps=6, n_paths=5, replacement=replacement, seed=3)
    ref = discrete_trajectory(p, x0, variant, **kw)
    assert torch.allclose(simulate(p, x0, variant, **kw), ref, atol=1e-13, rtol=0)


def test_predicted_u():
    p = ValleyProblem(kappa=1.5)
    t = torch.linspace(0, 4, 5, dtype=DT)
    usam = predicted_u(p, "m-usam", u0=0.5, rho=0.2, m=2, times=t)
    assert usam_rate(0.2, 2, kappa=1.5) == pytest.approx(0.2 * 0.5 * 2.25)
    assert torch.allclose(usam, 0.5 * torch.exp(-0.225 * t))
    assert torch.all(predicted_u(p, "n-sam", u0=0.5, rho=0.2, m=None, times=t) == 0.5)
    # the SAM ODE: its initial slope is the package's drift, and u decays monotonically towards 0
    sam = predicted_u(p, "m-sam", u0=0.5, rho=0.2, m=2, times=torch.tensor([0.0, 1e-3], dtype=DT))
    slope = (sam[1] - sam[0]) / 1e-3
    drift = sde.drift(p, torch.tensor([0.5, 0.0], dtype=DT), "m-sam", rho=0.2, b=4, m=2, replacement=True)[0]
    assert slope.item() == pytest.approx(drift.item(), rel=1e-3)
    long = predicted_u(p, "m-sam", u0=0.5, rho=0.2, m=2, times=t)
    assert torch.all(long.diff() < 0) and long[-1] > 0


def test_the_drift_of_m_usam_is_measured():
    # 2000 paths of m-USAM (m=1) for 200 steps: E u_T within 4 standard errors of the prediction,
    # corrected by the O(rho^2) of the discrete step (relative size ~rho: allow 2 %)
    p = ValleyProblem()
    x0 = torch.tensor([0.8, 0.0], dtype=DT)
    xs = simulate(p, x0, "m-usam", eta=0.05, rho=0.02, b=8, m=1, n_steps=200, n_paths=2000, seed=0)
    u_t = xs[-1, :, 0]
    pred = 0.8 * math.exp(-usam_rate(0.02, 1) * 10.0)
    se = u_t.std().item() / math.sqrt(2000)
    assert abs(u_t.mean().item() - pred) < 4 * se + 0.02 * (0.8 - pred)
    sgd = simulate(p, x0, "sgd", eta=0.05, rho=0.0, b=8, n_steps=200, n_paths=2000, seed=0)[-1, :, 0]
    assert abs(sgd.mean().item() - 0.8) < 4 * sgd.std().item() / math.sqrt(2000)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kappa"):
        ValleyProblem(kappa=0.0)
    with pytest.raises(ValueError, match="without replacement"):
        kind_count_law(5, replacement=False, copies=1)
    p = ValleyProblem()
    x0 = torch.zeros(2, dtype=DT)
    with pytest.raises(ValueError, match="variant"):
        simulate(p, x0, "adam", eta=0.1, rho=0.1, b=4, n_steps=1)
    with pytest.raises(ValueError, match="m must"):
        simulate(p, x0, "m-sam", eta=0.1, rho=0.1, b=4, m=3, n_steps=1)
    # the checks of discrete_trajectory, which simulate shares
    with pytest.raises(ValueError, match="eta"):
        simulate(p, x0, "sam", eta=0.0, rho=0.1, b=4, n_steps=1)
    with pytest.raises(ValueError, match="without replacement"):
        simulate(p, x0, "sam", eta=0.1, rho=0.1, b=5, n_steps=1, replacement=False)
    with pytest.raises(ValueError, match="seed"):
        simulate(p, x0, "sam", eta=0.1, rho=0.1, b=4, n_steps=1, seed=-1)
    with pytest.raises(ValueError, match="x0 must be"):
        simulate(p, torch.zeros(3, 2, dtype=DT), "sam", eta=0.1, rho=0.1, b=4, n_steps=1, n_paths=2)
    with pytest.raises(ValueError, match="x0 must be a floating-point tensor"):
        simulate(p, [0.0, 0.0], "sam", eta=0.1, rho=0.1, b=4, n_steps=1)
