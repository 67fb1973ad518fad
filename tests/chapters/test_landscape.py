"""sam_tutorial.chapters.landscape: the real optimizers on a toy problem against the discrete update rules,
the
exact ascent direction against a dense grid and its first-order expansion, and the stability
thresholds against simulated dynamics on a quadratic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sam_tutorial.chapters import landscape
from sam_tutorial.optim import MSAM, SAM
from sam_tutorial.sgn import batches
from sam_tutorial.theory import problems, recursions, stability

F64 = torch.float64


@pytest.fixture(scope="module")
def problem() -> problems.SharpFlatProblem:
    return problems.make_sharp_flat_problem(n=16, seed=3)


@pytest.mark.parametrize(("variant", "make", "m"), [
    ("sgd", lambda mod, base: SAM(mod, base, rho=0.0), None),
    ("sam", lambda mod, base: SAM(mod, base, rho=0.2), None),
    ("usam", lambda mod, base: SAM(mod, base, rho=0.02, normalize=False), None),
    ("m-sam", lambda mod, base: MSAM(mod, base, rho=0.2, m=2, backend="loop"), 2),
    ("m-usam", lambda mod, base: MSAM(mod, base, rho=0.02, m=2, normalize=False, backend="loop"), 2),
])
def test_optimizers_on_the_landscape_follow_the_discrete_update_rule(problem, variant, make, m) -> None:
    """The optimizer classes (torch engine) and recursions.update_direction (torch.func) agree step by
step."""
    x0 = torch.tensor([-2.4, 0.8], dtype=F64)
    run = landscape.run_optimizer(problem, x0, make, lr=0.1, b=4, n_steps=25, seed=7)
    rho = {"sgd": 0.0, "sam": 0.2, "usam": 0.02, "m-sam": 0.2, "m-usam": 0.02}[variant]
    x = x0.clone()
    for k, index in enumerate(run.batches):
        x = x - 0.1 * recursions.update_direction(problem, x, variant, index, rho=rho, m=m)
        torch.testing.assert_close(run.points[k + 1], x, atol=1e-11, rtol=0)
    if variant == "sam":
        torch.testing.assert_close(run.perturbation_norms, torch.full((25,), 0.2, dtype=F64))


def test_batches_are_uniform_subsets_and_shared_by_seed(problem) -> None:
    x0 = torch.zeros(2, dtype=F64)
    a = landscape.run_optimizer(problem, x0, lambda m, b: SAM(m, b, rho=0.0), lr=0.1, b=5, n_steps=400)
    b = landscape.run_optimizer(problem, x0, lambda m, b: SAM(m, b, rho=0.3), lr=0.1, b=5, n_steps=400)
    assert torch.equal(a.batches, b.batches)
    assert all(len(set(row.tolist())) == 5 for row in a.batches)
    counts = torch.bincount(a.batches.flatten(), minlength=16).double()
    assert float(counts.min()) > 0.6 * 400 * 5 / 16  # every sample drawn about equally often
    with pytest.raises(ValueError, match="b must be"):
        landscape.run_optimizer(problem, x0, lambda m, b: SAM(m, b, rho=0.0), lr=0.1, b=17, n_steps=1)


def _quadratic(h: torch.Tensor) -> problems.QuadraticProblem:
    return problems.QuadraticProblem(h.unsqueeze(0), torch.zeros(1, h.shape[0], dtype=F64))


def test_ascent_direction_matches_a_dense_grid() -> None:
    p = _quadratic(torch.tensor([[3.0, 1.0], [1.0, -2.0]], dtype=F64))
    fn = landscape.batch_loss(p)
    x = torch.tensor([0.7, -0.3], dtype=F64)
    theta = np.linspace(0, 2 * np.pi, 2_000_001)
    h, xn = p.curvatures[0].numpy(), x.numpy()
    for rho in (0.05, 0.3, 1.0):
        pts = xn[None] + rho * np.stack([np.cos(theta), np.sin(theta)], 1)
        vals = 0.5 * np.einsum("ki,ij,kj->k", pts, h, pts)
        best = theta[vals.argmax()]
        u = landscape.ascent_direction(fn, x, rho)
        assert abs(math.atan2(float(u[1]), float(u[0])) % (2 * np.pi) - best) < 1e-5


def test_ascent_angle_is_first_order_in_rho() -> None:
    h = torch.tensor([[3.0, 1.0], [1.0, -2.0]], dtype=F64)
    fn = landscape.batch_loss(_quadratic(h))
    x = torch.tensor([0.7, -0.3], dtype=F64)
    g = h @ x
    unit = g / g.norm()
    c = ((h @ unit) - (unit @ h @ unit) * unit).norm() / g.norm()  # by hand
    torch.testing.assert_close(landscape.first_order_angle_slope(fn, x), c)
    ratios = [float(landscape.ascent_angle(fn, x, r)) / (float(c) * r) for r in (1e-2, 1e-3, 1e-4)]
    assert abs(ratios[-1] - 1) < 1e-3 and abs(ratios[-1] - 1) < abs(ratios[0] - 1)
    iso = landscape.batch_loss(_quadratic(2.0 * torch.eye(2, dtype=F64)))
    assert float(landscape.ascent_angle(iso, x, 0.5)) < 1e-12  # isotropic: first order is exact


def test_basin_boundary_is_where_the_mean_quadratic_terms_are_equal(problem) -> None:
    r = stability.sharp_basin_radius(problem)
    assert r == pytest.approx(6.0 * 1.0 / (4.0 + 1.0))
    towards = (problem.flat_centre - problem.sharp_centre) / 6.0
    inside, outside = (problem.sharp_centre + (r + s) * towards for s in (-1e-9, 1e-9))
    assert not bool(stability.in_flat_basin(problem, inside))
    assert bool(stability.in_flat_basin(problem, outside))
    edge = problem.sharp_centre + r * towards  # with the offsets, the mean terms are equal there
    qs = 0.5 * problem.sharp_curvature * (edge - problem.sharp_centre - problem.sharp_offsets).square().sum(1)
    qf = 0.5 * problem.flat_curvature * (edge - problem.flat_centre - problem.flat_offsets).square().sum(1)
    torch.testing.assert_close(qs.mean(), qf.mean())


@pytest.mark.parametrize("lam", [4.0, 16.0])
def test_usam_threshold_separates_convergence_from_divergence(lam: float) -> None:
    p = _quadratic(lam * torch.eye(2, dtype=F64))
    eta = 0.1
    rho_u = stability.usam_critical_rho(eta, lam)
    x0 = torch.tensor([0.3, -0.2], dtype=F64)
    ends = [
        recursions.discrete_trajectory(p, x0, "usam", eta=eta, rho=f * rho_u, b=1, n_steps=300)[-1, 0]
        for f in (0.8, 1.2)
    ]
    assert float(ends[0].norm()) < 1e-6 < 1e3 < float(ends[1].norm())


@pytest.mark.parametrize("lam", [5.0, 16.0])
def test_sam_settles_on_the_predicted_two_cycle(lam: float) -> None:
    p = _quadratic(lam * torch.eye(2, dtype=F64))
    eta, rho = 0.1, 0.2
    xs = recursions.discrete_trajectory(p, torch.tensor([0.9, 0.4], dtype=F64), "sam", eta=eta, rho=rho,
                                      b=1, n_steps=400)[:, 0]
    amplitude = stability.sam_cycle_amplitude(eta, lam, rho)
    torch.testing.assert_close(xs[-1].norm(), torch.tensor(amplitude, dtype=F64))
    torch.testing.assert_close(xs[-1], -xs[-2])  # a 2-cycle through the minimum


def test_sam_escape_radius_reaches_the_basin_boundary(problem) -> None:
    rho = stability.sam_escape_rho(0.1, problem)
    assert stability.sam_cycle_amplitude(0.1, problem.sharp_curvature, rho) == pytest.approx(
        stability.sharp_basin_radius(problem))
    with pytest.raises(ValueError):
        stability.sam_cycle_amplitude(0.2, 16.0, 0.1)  # eta * lambda >= 2


def test_perturbations_enumerate_the_batches(problem) -> None:
    x = torch.tensor([-2.8, 0.2], dtype=F64)
    grads = torch.func.jacrev(problem)(x)
    full = grads.mean(0)
    eps, probs = landscape.perturbations(problem, x, 16, rho=0.3)
    torch.testing.assert_close(eps, (0.3 * full / full.norm()).unsqueeze(0))
    eps, probs = landscape.perturbations(problem, x, 4, rho=0.3, normalize=False)
    assert eps.shape == (math.comb(16, 4), 2)
    torch.testing.assert_close(probs @ eps.square().sum(1),
                               0.09 * batches.expected_sq_batch_grad_norm(grads, 4))  # C1
    eps, _ = landscape.perturbations(problem, x, 1, rho=0.3)
    torch.testing.assert_close(eps.norm(dim=1), torch.full((16,), 0.3, dtype=F64))


def test_loss_grid_is_the_mean_loss(problem) -> None:
    xs, ys, f = landscape.loss_grid(problem, (-1.0, 2.0), (0.0, 1.0), resolution=7)
    point = torch.stack([xs[5], ys[2]])
    torch.testing.assert_close(f[2, 5], problem(point).mean())


def test_first_crossing_interpolates_in_log_rho() -> None:
    rho = landscape.first_crossing([0.1, 0.2, 0.4], [0.0, 0.25, 1.0])
    assert math.log(rho) == pytest.approx(math.log(0.2) + (0.25 / 0.75) * math.log(2.0))
    assert landscape.first_crossing([0.1, 0.2], [0.6, 1.0]) == pytest.approx(0.1)
    assert math.isnan(landscape.first_crossing([0.1, 0.2], [0.1, 0.2]))
