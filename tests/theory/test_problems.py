"""Tests for sam_tutorial.theory.problems: closed forms of the toy problems against autograd, the diagonal
linear
network against a line-by-line transcription of Andriushchenko & Flammarion's NumPy code, and C7."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import jacrev

from sam_tutorial.sgn import variance
from sam_tutorial.theory import diagonal_net, problems, recursions


def test_quadratic_closed_forms_match_autograd() -> None:
    p = problems.make_quadratic_problem(n=7, dim=3, seed=1)
    x = torch.tensor([0.2, -0.4, 1.5], dtype=torch.float64)
    g = jacrev(p)(x)
    torch.testing.assert_close(p.grads(x), g, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(p.trace_V(x), variance.sgn_trace(g), rtol=1e-13, atol=0)
    hess = jacrev(jacrev(lambda z: p(z).mean()))(x)
    torch.testing.assert_close(p.hessian(), hess, rtol=1e-13, atol=1e-14)
    assert float(p.grads(p.minimizer()).mean(0).norm()) < 1e-12
    # different curvatures per sample: tr V depends on x, and batched calls agree with single ones
    assert not torch.isclose(p.trace_V(x), p.trace_V(p.minimizer()))
    xs = torch.stack([x, 2 * x])
    torch.testing.assert_close(p(xs)[1], p(2 * x))
    torch.testing.assert_close(p.trace_V(xs)[1], p.trace_V(2 * x))


def test_logistic_losses_equal_the_formula() -> None:
    x, y = problems.logistic_data(9, 4, seed=2, label_noise=0.2)
    p = problems.LogisticProblem(x, y, l2=0.1)
    w = torch.tensor([0.5, -1.0, 0.3, 2.0], dtype=torch.float64)
    expected = torch.log1p(torch.exp(-y * (x @ w))) + 0.05 * (w @ w)
    torch.testing.assert_close(p(w), expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(p(torch.stack([w, w]))[1], expected, rtol=1e-13, atol=0)
    assert set(y.tolist()) == {-1.0, 1.0}


def _af_reference(data: diagonal_net.DiagonalNetData, algorithm: str, rho: float, gamma: float, iters: int):
    """A&F's diag_nets.py GD / n_SAM_GD / one_SAM_GD loops, transcribed in NumPy."""
    X, y = data.features.numpy(), data.targets.numpy()
    u, v = 0.1 * np.ones(X.shape[1]), np.zeros(X.shape[1])
    for _ in range(iters):
        if algorithm == "gd":
            Xerr = X.T @ (X @ (u * v) - y)
            gu, gv = (Xerr * v) / X.shape[0], (Xerr * u) / X.shape[0]
        elif algorithm == "n-sam":
            Xerr = X.T @ (X @ (u * v) - y)
            us, vs = u + rho * (Xerr * v) / X.shape[0], v + rho * (Xerr * u) / X.shape[0]
            Xerr = X.T @ (X @ (us * vs) - y)
            gu, gv = (Xerr * vs) / X.shape[0], (Xerr * us) / X.shape[0]
        else:
            r = X @ (u * v) - y
            gu, gv = np.zeros_like(u), np.zeros_like(v)
            for k in range(X.shape[0]):
                uk = u + 2 * rho * r[k] * X[k] * v
                vk = v + 2 * rho * r[k] * X[k] * u
                gu += ((X[k] * uk * vk).sum() - y[k]) * vk * X[k] / X.shape[0]
                gv += ((X[k] * uk * vk).sum() - y[k]) * uk * X[k] / X.shape[0]
        u, v = u - gamma * gu, v - gamma * gv
    return u, v


@pytest.mark.parametrize("algorithm", ["gd", "n-sam", "1-sam"])
def test_diagonal_net_follows_the_reference_code(algorithm: str) -> None:
    data = diagonal_net.diagonal_net_data(n=8, dim=6, sparsity=2, n_test=10, seed=3)
    run = diagonal_net.train_diagonal_net(data, algorithm, rho=0.3, lr=0.2, n_iters=25)
    u, v = _af_reference(data, algorithm, 0.3, 0.2, 25)
    np.testing.assert_allclose(run.u.numpy(), u, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(run.v.numpy(), v, rtol=1e-12, atol=1e-14)
    assert int(run.iterations[-1]) == 25 and run.test_loss.shape == run.train_loss.shape


def test_diagonal_net_algorithms_are_the_generic_variants() -> None:
    # full batch (b = n): GD is "sgd", A&F's n-SAM is "n-usam", their 1-SAM is "m-usam" with m = 1
    # and radius 2 rho (their per-sample ascent uses the gradient of r^2, not r^2 / 2)
    data = diagonal_net.diagonal_net_data(n=8, dim=6, sparsity=2, n_test=10, seed=3)
    p = diagonal_net.DiagonalNetProblem(data.features, data.targets)
    x0 = torch.cat([torch.full((6,), 0.1, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)])
    for algorithm, variant, rho, m in (
        ("gd", "sgd", 0.0, None),
        ("n-sam", "n-usam", 0.3, None),
        ("1-sam", "m-usam", 0.6, 1),
    ):
        run = diagonal_net.train_diagonal_net(data, algorithm, rho=0.3, lr=0.2, n_iters=3)
        xs = recursions.discrete_trajectory(p, x0, variant, eta=0.2, rho=rho, b=8, m=m, n_steps=3)
        torch.testing.assert_close(xs[-1, 0], torch.cat([run.u, run.v]), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(p(xs[-1, 0]).mean(), run.train_loss[-1], rtol=1e-12, atol=0)


def test_C7_one_sam_generalises_better_than_n_sam_and_gd() -> None:
    data = diagonal_net.diagonal_net_data()  # A&F: n=20, d=30, r=3, gamma=5/d, u0=0.1, 10^4 iterations
    test = {
        alg: float(
            diagonal_net.train_diagonal_net(data, alg, rho=rho, n_iters=10_000, n_records=2).test_loss[-1]
        )
        for alg, rho in (("gd", 0.0), ("n-sam", 0.1), ("1-sam", 0.1))
    }
    assert test["1-sam"] < 0.1 * test["gd"], test
    assert abs(test["n-sam"] - test["gd"]) < 0.2 * test["gd"], test


def test_sharp_flat_minima_have_equal_loss_and_different_noise() -> None:
    p = problems.make_sharp_flat_problem(n=16, sharp_curvature=16.0, flat_curvature=1.0, flat_spread=0.5)
    a, b = p.sharp_centre, p.flat_centre
    fa, fb = p(a).mean(), p(b).mean()
    assert float(fa) == pytest.approx(float(fb), rel=1e-3)
    for centre in (a, b):
        assert float(jacrev(p)(centre).mean(0).norm()) < 1e-3
    ratio_v = variance.sgn_trace(jacrev(p)(a)) / variance.sgn_trace(jacrev(p)(b))
    ha = jacrev(jacrev(lambda z: p(z).mean()))(a).trace()
    hb = jacrev(jacrev(lambda z: p(z).mean()))(b).trace()
    assert float(ratio_v) == pytest.approx(16.0, rel=0.01)
    assert float(ha / hb) == pytest.approx(16.0, rel=0.01)


def test_bad_arguments_raise_value_error_naming_them() -> None:
    with pytest.raises(ValueError, match="centres"):
        problems.QuadraticProblem(torch.eye(2).expand(3, 2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="curvature_range"):
        problems.make_quadratic_problem(curvature_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="labels"):
        problems.LogisticProblem(torch.zeros(3, 2), torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="label_noise"):
        problems.logistic_data(label_noise=1.5)
    with pytest.raises(ValueError, match="sparsity"):
        diagonal_net.diagonal_net_data(dim=3, sparsity=4)
    with pytest.raises(ValueError, match="algorithm"):
        diagonal_net.train_diagonal_net(diagonal_net.diagonal_net_data(), "2-sam")
    with pytest.raises(ValueError, match="rho"):
        diagonal_net.train_diagonal_net(diagonal_net.diagonal_net_data(), "1-sam", rho=-0.1)
    with pytest.raises(ValueError, match="n must be"):
        problems.make_sharp_flat_problem(n=1)
    with pytest.raises(ValueError, match="sharp_curvature"):
        problems.make_sharp_flat_problem(sharp_curvature=0.0)


def test_logistic_minimizer_is_stationary_and_not_quadratic() -> None:
    from sam_tutorial.theory.problems import LogisticProblem, logistic_data

    p = LogisticProblem(*logistic_data(8, 2, seed=3, label_noise=0.2), l2=0.05)
    w = p.minimizer()
    def f(z):
        return p(z).mean()
    assert float(torch.func.grad(f)(w).norm()) < 1e-10
    # the Hessian changes with the point: the Taylor expansion of a perturbed gradient is not exact
    h0, h1 = torch.func.hessian(f)(w), torch.func.hessian(f)(w + 1.0)
    assert float((h0 - h1).abs().max()) > 1e-3


def test_logistic_minimizer_fails_on_separable_data() -> None:
    from sam_tutorial.theory.problems import LogisticProblem

    x = torch.tensor([[1.0, 1.0], [-1.0, -0.5]], dtype=torch.float64)
    with pytest.raises(ValueError, match="separable"):
        LogisticProblem(x, torch.tensor([1.0, -1.0], dtype=torch.float64)).minimizer(steps=30)
