"""RW-(U)SAM's mean update: the closed form for fixed weights, slope-2 gaps, λ = 0 is SAM, the valley."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import grad

from sam_tutorial.theory.problems import LogisticProblem, logistic_data
from sam_tutorial.theory.recursions import expected_update
from sam_tutorial.theory.rwsam_drift import (
    NoisyValley,
    expected_fixed_weights_update,
    expected_m_update,
    expected_rw_update,
    first_order_direction,
    fixed_weights_drift,
    gibbs_batch_weights,
)

DT = torch.float64
RHOS = (0.2, 0.1, 0.05, 0.025)


def slope(rhos, gaps) -> float:
    return float(np.polyfit(np.log(rhos), np.log(gaps), 1)[0])


@pytest.fixture
def logistic() -> tuple[LogisticProblem, torch.Tensor]:
    return LogisticProblem(*logistic_data(n=6, dim=3, seed=1)), torch.tensor([0.7, -0.4, 0.9], dtype=DT)


@pytest.mark.parametrize("descent", ["uniform", "weighted"])
def test_fixed_weights_closed_form_slope_two(logistic, descent) -> None:
    problem, x = logistic
    p = torch.tensor([0.6, 0.3, 0.1], dtype=DT)
    w = p if descent == "weighted" else torch.full((3,), 1 / 3, dtype=DT)
    gaps = []
    for rho in RHOS:
        exact = expected_fixed_weights_update(problem, x, rho=rho, perturb=p, descent=w)
        pred, c = fixed_weights_drift(problem, x, rho=rho, perturb=p, descent=w)
        gaps.append(float((exact - pred).norm()))
    # the coefficient of (1/2) grad tr V: 1/B with uniform descent whatever p is, sum p^2 if weighted
    assert c == pytest.approx(1 / 3 if descent == "uniform" else float(p.square().sum()))
    assert slope(RHOS, gaps) == pytest.approx(2.0, abs=0.1)
    assert gaps[-1] < 1e-4


def test_fixed_weights_wrong_coefficient_is_first_order(logistic) -> None:
    # the test above has power: with the weighted coefficient in the uniform case the gap is O(rho)
    problem, x = logistic
    p = torch.tensor([0.6, 0.3, 0.1], dtype=DT)
    u = torch.full((3,), 1 / 3, dtype=DT)
    gaps = []
    for rho in RHOS:
        exact = expected_fixed_weights_update(problem, x, rho=rho, perturb=p, descent=u)
        wrong, _ = fixed_weights_drift(problem, x, rho=rho, perturb=p, descent=p)
        gaps.append(float((exact - wrong).norm()))
    assert slope(RHOS, gaps) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("descent", ["uniform", "weighted"])
def test_gibbs_first_order_slope_two(descent, normalize) -> None:
    problem = LogisticProblem(*logistic_data(n=8, dim=3, seed=2))
    x = torch.tensor([0.5, -1.0, 0.8], dtype=DT)
    gaps = []
    for rho in RHOS:
        kw = dict(rho=rho, lam=2.0, b=4, descent=descent, normalize=normalize)
        exact = expected_rw_update(problem, x, **kw)
        first = expected_rw_update(problem, x, first_order=True, **kw)
        assert exact.exact
        gaps.append(float((exact.direction - first.direction).norm()))
    assert slope(RHOS, gaps) == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("descent", ["uniform", "weighted"])
def test_lam_zero_is_sam(logistic, descent) -> None:
    problem, x = logistic
    rw = expected_rw_update(problem, x, rho=0.1, lam=0.0, b=3, descent=descent)
    sam = expected_update(problem, x, "sam", rho=0.1, b=3)
    torch.testing.assert_close(rw.direction, sam, atol=1e-12, rtol=0)
    assert float(rw.mean_sum_sq) == pytest.approx(1 / 3)
    m_sam = expected_update(problem, x, "m-sam", rho=0.1, b=2, m=2)
    torch.testing.assert_close(expected_m_update(problem, x, rho=0.1, m=2), m_sam, atol=1e-12, rtol=0)


def test_weighted_descent_is_gradient_of_norm(logistic) -> None:
    # with p frozen, H_P g_P / ||g_P|| = grad ||g_P||: the weighted reading has an implicit objective
    problem, x = logistic
    p = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], dtype=DT)
    g_p = lambda y: grad(lambda z: p @ problem(z))(y)  # noqa: E731
    direct = g_p(x) + 0.3 * grad(lambda y: g_p(y).norm())(x)
    torch.testing.assert_close(first_order_direction(problem, x, p, p, rho=0.3), direct, atol=1e-12, rtol=0)


def test_gibbs_batch_weights_limits() -> None:
    rows = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [2 / 3, 1 / 3, 0.0]], dtype=DT)
    s = torch.tensor([1.0, 3.0, 2.0], dtype=DT)
    torch.testing.assert_close(gibbs_batch_weights(rows, s, 0.0), rows)
    hot = gibbs_batch_weights(rows, s, 200.0)
    torch.testing.assert_close(hot, torch.tensor([[0, 0, 1.0], [0, 1.0, 0], [0, 1.0, 0]], dtype=DT))
    # a sample drawn twice counts twice: p ∝ count * exp(lam s)
    mid = gibbs_batch_weights(rows[2:], s, 1.0)[0]
    assert float(mid[0] / mid[1]) == pytest.approx(2 * math.exp(-2.0))


def test_valley_is_flat_and_trace_closed_form() -> None:
    v = NoisyValley(n=10, k=2, a=0.7, seed=3)
    for u in (-0.5, 0.0, 0.8):
        x = v.point(u)
        assert float(v(x).mean()) == pytest.approx(0.0, abs=1e-12)
        assert float(grad(lambda y: v(y).mean())(x).norm()) < 1e-12
        assert float(v.trace_V(x)) == pytest.approx(v.trace_V_closed_form(u), rel=1e-10)
    assert (v(v.point(0.0)) != 0).any()  # not interpolating


def test_valley_m_usam_drift_is_trace_penalty() -> None:
    # along the valley grad f = 0, so m-USAM's drift is (rho/2) c_m d/du tr V, c_m = (n-m)/(m(n-1))
    v = NoisyValley(n=8, k=2, seed=0)
    x = v.point(0.2)
    dtr = float(grad(v.trace_V)(x)[0])
    for m in (1, 2, 4):
        d = expected_m_update(v, x, rho=1e-4, m=m, normalize=False, first_order=True)
        c = (8 - m) / (m * 7)
        assert float(d[0]) / 1e-4 == pytest.approx(0.5 * c * dtr, rel=1e-8)


def test_bad_arguments() -> None:
    problem = LogisticProblem(*logistic_data(n=4, dim=2, seed=0))
    x = torch.zeros(2, dtype=DT)
    with pytest.raises(ValueError, match="descent"):
        expected_rw_update(problem, x, rho=0.1, lam=1.0, b=2, descent="gibbs")
    with pytest.raises(ValueError, match="lam"):
        expected_rw_update(problem, x, rho=0.1, lam=-1.0, b=2)
