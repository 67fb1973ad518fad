"""Tests for sam_tutorial.curvature.sharpness against closed forms: linear losses (S_m = rho * mean ||g_I||),
quadratic losses (the trust-region maximum; sigma^2/2 tr H), and the one-step SAM sharpness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam_tutorial.curvature import sharpness

GEN = torch.Generator().manual_seed(0)
X = torch.randn(8, 3, generator=GEN, dtype=torch.float64)
Y = torch.randn(8, generator=GEN, dtype=torch.float64)
W0 = torch.randn(1, 3, generator=GEN, dtype=torch.float64)


def _linear_model() -> nn.Module:
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(W0)
    return model


def linear_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.squeeze(-1) * y  # linear in the weights: per-sample gradient y_i x_i


def square_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out.squeeze(-1) - y) ** 2


def _trust_region_max(g: torch.Tensor, h: torch.Tensor, rho: float) -> float:
    """max g.d + d.H.d/2 over ||d|| <= rho for PSD H: d = (mu I - H)^-1 g on the sphere (bisection on mu)."""
    lam, q = torch.linalg.eigh(h)
    gq = q.T @ g
    lo, hi = float(lam[-1]) + 1e-12, float(lam[-1]) + float(g.norm()) / rho + 1.0
    for _ in range(200):
        mu = 0.5 * (lo + hi)
        if float((gq / (mu - lam)).norm()) > rho:
            lo = mu
        else:
            hi = mu
    d = q @ (gq / (hi - lam))
    return float(g @ d + 0.5 * d @ h @ d)


def test_linear_loss_m_sharpness_is_rho_times_mean_micro_batch_gradient_norm() -> None:
    model, rho = _linear_model(), 0.1
    values = []
    for m in (1, 2, 4, 8):
        g = (Y[:, None] * X).reshape(8 // m, m, 3).mean(1)  # micro-batch gradients
        expected = rho * g.norm(dim=1).mean()
        got = sharpness.m_sharpness(model, linear_loss, X, Y, rho=rho, m=m)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
        values.append(float(got))
    # nested partitions: the triangle inequality makes S_m non-increasing in m
    assert values == sorted(values, reverse=True) and values[0] > values[-1]


@pytest.mark.parametrize("m", [2, 4])
def test_quadratic_m_sharpness_equals_the_trust_region_maximum(m: int) -> None:
    model, rho = _linear_model(), 0.3
    expected = []
    for j in range(8 // m):
        xi, yi = X[j * m : (j + 1) * m], Y[j * m : (j + 1) * m]
        g = xi.T @ (xi @ W0[0] - yi) / m
        expected.append(_trust_region_max(g, xi.T @ xi / m, rho))
    got = sharpness.m_sharpness(model, square_loss, X, Y, rho=rho, m=m, n_iters=200)
    assert float(got) == pytest.approx(sum(expected) / len(expected), rel=1e-8)
    few = sharpness.m_sharpness(model, square_loss, X, Y, rho=rho, m=m, n_iters=3)
    assert float(few) <= float(got) + 1e-12  # a feasible point never beats the maximum


def test_sam_sharpness_closed_form_and_one_step_ascent() -> None:
    model, rho = _linear_model(), 0.2
    g = X.T @ (X @ W0[0] - Y) / 8
    h = X.T @ X / 8
    u = g / g.norm()
    expected = rho * g.norm() + 0.5 * rho**2 * (u @ h @ u)
    got = sharpness.sam_sharpness(model, square_loss, X, Y, rho=rho)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    usam = sharpness.sam_sharpness(model, square_loss, X, Y, rho=rho, normalize=False)
    torch.testing.assert_close(usam, rho * g @ g + 0.5 * rho**2 * (g @ h @ g), rtol=1e-12, atol=0)
    one_step = sharpness.m_sharpness(model, square_loss, X, Y, rho=rho, m=2, n_iters=1, step_size=rho)
    torch.testing.assert_close(
        sharpness.sam_sharpness(model, square_loss, X, Y, rho=rho, m=2), one_step, rtol=1e-12, atol=0
    )


def test_average_sharpness_is_half_sigma_squared_trace_for_a_quadratic() -> None:
    model, sigma, n = _linear_model(), 0.1, 2000
    trace = float((X.T @ X / 8).trace())
    got = float(sharpness.average_sharpness(model, square_loss, X, Y, sigma=sigma, n_samples=n, seed=1))
    # each antithetic sample is (sigma^2/2) z^T H z with Gaussian z: variance (sigma^2/2)^2 * 2 ||H||_F^2
    sd = 0.5 * sigma**2 * (2 * float((X.T @ X / 8).square().sum())) ** 0.5 / n**0.5
    assert abs(got - 0.5 * sigma**2 * trace) < 4 * sd
    # antithetic pairs cancel a linear loss exactly; single draws do not
    lin = sharpness.average_sharpness(model, linear_loss, X, Y, sigma=sigma, n_samples=16)
    assert abs(float(lin)) < 1e-15
    plain = sharpness.average_sharpness(model, linear_loss, X, Y, sigma=sigma, n_samples=16, antithetic=False)
    assert abs(float(plain)) > 1e-6


def test_restarts_keep_the_best_run_and_leave_the_model_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    before = [p.clone() for p in model.parameters()]
    kw = dict(rho=0.5, m=4, n_iters=5, seed=0)
    one = sharpness.m_sharpness(model, square_loss, X, Y, restarts=1, **kw)
    three = sharpness.m_sharpness(model, square_loss, X, Y, restarts=3, **kw)
    assert float(three) >= float(one)  # the first restart is the same run
    for p, q in zip(before, model.parameters()):
        assert torch.equal(p, q)
    assert all(p.grad is None for p in model.parameters())


def test_batchnorm_models_run_in_eval_mode_or_with_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).double().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a = sharpness.m_sharpness(model, square_loss, X, Y, rho=0.1, m=4, n_iters=3)
    b = sharpness.m_sharpness(model, square_loss, X, Y, rho=0.1, m=4, n_iters=3, eval_mode=False)
    assert torch.isfinite(a) and torch.isfinite(b) and not torch.isclose(a, b)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_bad_arguments_raise_value_error_naming_them() -> None:
    model = _linear_model()
    with pytest.raises(ValueError, match="m must divide"):
        sharpness.m_sharpness(model, square_loss, X, Y, rho=0.1, m=3)
    with pytest.raises(ValueError, match="m must be"):
        sharpness.m_sharpness(model, square_loss, X, Y, rho=0.1, m=0)
    with pytest.raises(ValueError, match="rho"):
        sharpness.m_sharpness(model, square_loss, X, Y, rho=-0.1, m=2)
    with pytest.raises(ValueError, match="n_iters"):
        sharpness.m_sharpness(model, square_loss, X, Y, rho=0.1, m=2, n_iters=0)
    with pytest.raises(ValueError, match="restarts"):
        sharpness.m_sharpness(model, square_loss, X, Y, rho=0.1, m=2, restarts=0)
    with pytest.raises(ValueError, match="step_size"):
        sharpness.m_sharpness(model, square_loss, X, Y, rho=0.1, m=2, step_size=0.0)
    with pytest.raises(ValueError, match="sigma"):
        sharpness.average_sharpness(model, square_loss, X, Y, sigma=-1.0)
    with pytest.raises(ValueError, match="m must divide"):
        sharpness.sam_sharpness(model, square_loss, X, Y, rho=0.1, m=5)
