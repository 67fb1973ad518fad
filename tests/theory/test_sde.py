"""Tests for sam_tutorial.theory.sde: the drifts of the paper's §4.2 table against the exact mean update of
each discrete algorithm (claims C3, C4: error O(rho^2), fitted log-log slope 2), closed forms of the
regularisers and the diffusion, and the weak error of Euler-Maruyama vs the algorithm (C5)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import grad, jacrev

from sam_tutorial.sgn.batches import batch_noise_coefficient
from sam_tutorial.theory import sde
from sam_tutorial.theory.problems import LogisticProblem, logistic_data, make_quadratic_problem
from sam_tutorial.theory.recursions import discrete_trajectory, expected_update

RHOS = [0.08, 0.04, 0.02, 0.01]
LOGISTIC = LogisticProblem(*logistic_data(10, 3, seed=1))
X = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)


def _slope(rhos: list[float], errors: list[float]) -> float:
    lx = torch.tensor(rhos).log()
    ly = torch.tensor(errors).log()
    return float(((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum())


def _drift_errors(variant: str, b: int, m: int | None, replacement: bool, extra=None) -> list[float]:
    """||E[direction] - (-drift)|| over the rho sweep; `extra(rho)` is added to the drift."""
    out = []
    for rho in RHOS:
        mean = expected_update(LOGISTIC, X, variant, rho=rho, b=b, m=m, replacement=replacement)
        stated = -sde.drift(LOGISTIC, X, variant, rho=rho, b=b, m=m, replacement=replacement)
        if extra is not None:
            stated = stated + extra(rho)
        out.append(float((mean - stated).norm()))
    return out


CASES = [
    ("usam", 3, None, False),  # Thm 3.3
    ("usam", 3, None, True),
    ("n-usam", 3, None, False),  # Thm 3.4
    ("m-usam", 4, 2, False),  # Thm 3.5
    ("m-usam", 4, 1, True),
    ("sam", 3, None, False),  # Thms 3.6-3.8
    ("n-sam", 3, None, False),
    ("m-sam", 4, 2, False),
    ("m-sam", 4, 1, True),
]


@pytest.mark.parametrize(("variant", "b", "m", "replacement"), CASES)
def test_C3_C4_mean_update_minus_drift_is_second_order_in_rho(
    variant: str, b: int, m: int | None, replacement: bool
) -> None:
    errors = _drift_errors(variant, b, m, replacement)
    assert abs(_slope(RHOS, errors) - 2) < 0.2, errors


def _grad_trace_v(z: torch.Tensor) -> torch.Tensor:
    def trace_v(y: torch.Tensor) -> torch.Tensor:
        g = jacrev(LOGISTIC)(y)
        return (g - g.mean(0)).square().sum(1).mean()

    return grad(trace_v)(z)


def test_n_usam_has_no_trace_V_term_and_usam_needs_it() -> None:
    # A wrong drift leaves a first-order error rho * ||delta||: the errors fall with slope 1, and
    # error / rho at the smallest rho is ||delta||, the size of the misplaced SGN term.
    c = batch_noise_coefficient(10, 3)
    g_tr = _grad_trace_v(X)
    misplaced = {
        # adding the SGN term to n-USAM's drift (Thm 3.4 says there is none)
        "n-usam": (0.5 * c * g_tr, +1.0),
        # removing it from USAM's drift (Thm 3.3 says there is one)
        "usam": (0.5 * c * g_tr, -1.0),
    }
    for variant, (delta, sign) in misplaced.items():
        errors = _drift_errors(variant, 3, None, False, extra=lambda rho, d=delta, s=sign: s * rho * d)
        assert abs(_slope(RHOS, errors) - 1) < 0.25, (variant, errors)
        assert errors[-1] / RHOS[-1] == pytest.approx(float(delta.norm()), rel=0.15), (variant, errors)
        assert errors[-1] > 5 * _drift_errors(variant, 3, None, False)[-1]
    # and the with-replacement coefficient 1/b is wrong for sampling without replacement
    delta = 0.5 * (1 / 3 - c) * g_tr
    wrong_c = _drift_errors("usam", 3, None, False, extra=lambda rho: rho * delta)
    assert wrong_c[-1] / RHOS[-1] == pytest.approx(float(delta.norm()), rel=0.15)
    assert wrong_c[-1] > 5 * _drift_errors("usam", 3, None, False)[-1]


def test_regularisers_match_closed_forms_on_quadratics() -> None:
    p = make_quadratic_problem(n=6, dim=3, seed=2)
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    g = p.grads(x)
    mean, trace_v = g.mean(0), p.trace_V(x)
    rho = 0.3
    for m in (1, 2, 3):
        for replacement in (False, True):
            c = 1 / m if replacement else (6 - m) / (m * 5)
            r = sde.implicit_regularizer(p, x, "m-usam", rho=rho, b=6, m=m, replacement=replacement)
            torch.testing.assert_close(r, 0.5 * rho * (mean @ mean + c * trace_v), rtol=1e-12, atol=0)
    # with replacement the tr V coefficient is rho/(2m): halving m doubles the penalty
    r1, r2 = (
        sde.implicit_regularizer(p, x, "m-usam", rho=rho, b=6, m=m, replacement=True)
        - 0.5 * rho * mean @ mean
        for m in (1, 2)
    )
    torch.testing.assert_close(r1 / r2, torch.tensor(2.0, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        sde.implicit_regularizer(p, x, "n-sam", rho=rho, b=2), rho * mean.norm(), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        sde.implicit_regularizer(p, x, "sgd", rho=rho, b=2), torch.tensor(0.0, dtype=torch.float64)
    )
    # SAM: rho E||g_B|| by enumeration in the test, over all pairs
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    expected = rho * torch.stack([g[[i, j]].mean(0).norm() for i, j in pairs]).mean()
    torch.testing.assert_close(
        sde.implicit_regularizer(p, x, "sam", rho=rho, b=2), expected, rtol=1e-12, atol=0
    )
    # batched x
    xs = torch.stack([x, 2 * x])
    assert sde.implicit_regularizer(p, xs, "usam", rho=rho, b=2).shape == (2,)
    torch.testing.assert_close(  # row by row, the unbatched values
        sde.implicit_regularizer(p, xs, "usam", rho=rho, b=2),
        torch.stack([sde.implicit_regularizer(p, z, "usam", rho=rho, b=2) for z in xs]), rtol=1e-12, atol=0
    )


def test_usam_drift_matches_its_closed_form_on_quadratics() -> None:
    # grad of rho/2 ||gbar||^2 is rho H gbar; grad of tr V is (2/n) sum_i (A_i - H)(g_i - gbar)
    p = make_quadratic_problem(n=6, dim=3, seed=2)
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    g, h, a = p.grads(x), p.hessian(), p.curvatures
    mean = g.mean(0)
    grad_tr = 2 * torch.einsum("nij,nj->i", a - h, g - mean) / 6
    rho, c = 0.1, batch_noise_coefficient(6, 2)
    expected = -(mean + rho * h @ mean + 0.5 * rho * c * grad_tr)
    torch.testing.assert_close(sde.drift(p, x, "usam", rho=rho, b=2), expected, rtol=1e-12, atol=1e-14)
    eta = 0.05
    with_eta = sde.drift(p, x, "sgd", rho=0.0, b=2, include_eta_term=True, eta=eta)
    torch.testing.assert_close(with_eta, -(mean + 0.5 * eta * h @ mean), rtol=1e-12, atol=1e-14)


def test_diffusion_is_c_b_V_and_matches_one_discrete_step() -> None:
    p = make_quadratic_problem(n=6, dim=2, seed=0)
    x = torch.tensor([1.0, -1.0], dtype=torch.float64)
    g = p.grads(x)
    v = (g - g.mean(0)).T @ (g - g.mean(0)) / 6
    for replacement in (False, True):
        c = batch_noise_coefficient(6, 2, replacement=replacement)
        sigma = sde.diffusion_matrix(p, x, b=2, replacement=replacement)
        torch.testing.assert_close(sigma, c * v, rtol=1e-12, atol=0)
        # one SGD step: Cov(x_1) = eta^2 c_b V, and the Euler-Maruyama step has the same covariance
        eta, paths = 0.1, 20_000
        steps = [
            discrete_trajectory(
                p, x, "sgd", eta=eta, rho=0.0, b=2, n_steps=1, n_paths=paths, replacement=replacement
            )[1],
            sde.euler_maruyama(
                p, x, "sgd", eta=eta, rho=0.0, b=2, n_steps=1, n_paths=paths, replacement=replacement
            )[1],
        ]
        for s in steps:
            torch.testing.assert_close(
                s.mean(0),
                x - eta * g.mean(0),
                rtol=0,
                atol=4 * eta * float(sigma.diagonal().max()) ** 0.5 / paths**0.5,
            )
            torch.testing.assert_close(torch.cov(s.T), eta**2 * sigma, rtol=0.05, atol=1e-3 * eta**2)


def test_discrete_runs_average_to_the_exact_expected_update() -> None:
    p = make_quadratic_problem(n=5, dim=2, seed=1)
    x = torch.tensor([1.0, 0.5], dtype=torch.float64)
    eta, paths = 0.1, 20_000
    for variant, m in (("m-sam", 2), ("usam", None)):
        for replacement in (False, True):
            step = discrete_trajectory(
                p, x, variant, eta=eta, rho=0.2, b=4, m=m, n_steps=1, n_paths=paths, replacement=replacement
            )[1]
            mean_dir = (x - step).mean(0) / eta
            exact = expected_update(p, x, variant, rho=0.2, b=4, m=m, replacement=replacement)
            sd = ((x - step) / eta).std(0).max()
            assert float((mean_dir - exact).abs().max()) < 4 * float(sd) / math.sqrt(paths)


def test_C5_weak_error_shrinks_with_eta() -> None:
    p = make_quadratic_problem(n=8, dim=2, seed=0, curvature_range=(0.5, 3.0))
    x0 = torch.tensor([2.0, -2.0], dtype=torch.float64)
    etas, errors = [0.2, 0.1, 0.05], []
    for eta in etas:
        r = sde.weak_error(
            p, x0, "m-usam", eta=eta, rho=0.05, b=4, m=2, horizon=0.4, n_paths=1024, substeps=4
        )
        k = int((r.discrete - r.sde).abs().argmax())
        assert float(r.error) > 4 * float(r.stderr[k])  # the error is resolved, not Monte Carlo noise
        errors.append(float(r.error))
    assert errors[0] > errors[1] > errors[2]
    assert 0.7 < _slope(etas, errors) < 1.3, errors  # weak order 1 in eta


def test_bad_arguments_raise_value_error_naming_them() -> None:
    p = make_quadratic_problem(n=6, dim=2)
    x = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="variant"):
        sde.drift(p, x, "adam", rho=0.1, b=2)
    with pytest.raises(ValueError, match="m must be"):
        sde.drift(p, x, "m-usam", rho=0.1, b=4, m=3)
    with pytest.raises(ValueError, match="m must be"):
        sde.drift(p, x, "m-sam", rho=0.1, b=4)
    with pytest.raises(ValueError, match="m is only used"):
        sde.drift(p, x, "usam", rho=0.1, b=4, m=2)
    with pytest.raises(ValueError, match="b must be"):
        sde.implicit_regularizer(p, x, "usam", rho=0.1, b=7)
    with pytest.raises(ValueError, match="eta"):
        sde.drift(p, x, "sgd", rho=0.0, b=2, include_eta_term=True)
    with pytest.raises(ValueError, match="eta"):
        sde.euler_maruyama(p, x, "sgd", eta=0.0, rho=0.0, b=2, n_steps=1)
    with pytest.raises(ValueError, match="substeps"):
        sde.euler_maruyama(p, x, "sgd", eta=0.1, rho=0.0, b=2, n_steps=1, substeps=0)
    with pytest.raises(ValueError, match="n_paths"):
        discrete_trajectory(p, x, "sgd", eta=0.1, rho=0.0, b=2, n_steps=1, n_paths=0)
    with pytest.raises(ValueError, match="rho"):
        discrete_trajectory(p, x, "sam", eta=0.1, rho=-1.0, b=2, n_steps=1)
