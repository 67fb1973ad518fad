"""Tests for sam_tutorial.sgn.curvature_noise: 1/2 grad tr V = Cov_i(H_i, grad f_i), by closed form
and by two autograd routes."""

from __future__ import annotations

import pytest
import torch

from sam_tutorial.sgn.curvature_noise import (
    covariance_of_moments,
    half_grad_trace_V,
    hessian_gradient_covariance,
)
from sam_tutorial.theory.problems import LogisticProblem, logistic_data, make_quadratic_problem

DT = torch.float64


def _two_bowls(a: float, b: float):
    return lambda x: torch.stack([0.5 * a * (x[0] - 1) ** 2, 0.5 * b * (x[0] + 1) ** 2])


@pytest.mark.parametrize("a,b,x", [(2.0, 5.0, 0.3), (1.0, 1.0, -0.7), (4.0, 0.5, 2.0)])
def test_two_sample_closed_form(a: float, b: float, x: float) -> None:
    # g_1 = a(x-1), g_2 = b(x+1); tr V = (g_1 - g_2)^2 / 4, so 1/2 d tr V/dx = (a - b)(g_1 - g_2) / 4
    losses, point = _two_bowls(a, b), torch.tensor([x], dtype=DT)
    g1, g2 = a * (x - 1), b * (x + 1)
    expected = torch.tensor([(a - b) * (g1 - g2) / 4], dtype=DT)
    torch.testing.assert_close(hessian_gradient_covariance(losses, point), expected)
    torch.testing.assert_close(half_grad_trace_V(losses, point), expected)


def test_equal_curvatures_give_no_sgn_term() -> None:
    # every H_i the same: the covariance vanishes however spread the gradients are
    gen = torch.Generator().manual_seed(0)
    centres = 5 * torch.randn(7, 3, generator=gen, dtype=DT)
    A = torch.diag(torch.tensor([1.0, 4.0, 9.0], dtype=DT))
    def losses(x):
        return 0.5 * torch.einsum("nd,de,ne->n", x - centres, A, x - centres)
    x = torch.randn(3, generator=gen, dtype=DT)
    cov = hessian_gradient_covariance(losses, x)
    assert float(cov.abs().max()) < 1e-12
    assert float(half_grad_trace_V(losses, x).abs().max()) < 1e-12


@pytest.mark.parametrize("kind", ["quadratic", "logistic"])
def test_identity_against_autograd_of_trace_V(kind: str) -> None:
    if kind == "quadratic":
        losses = make_quadratic_problem(n=6, dim=3, seed=2)
    else:
        losses = LogisticProblem(*logistic_data(9, 3, seed=4), l2=0.1)
    x = torch.tensor([0.4, -0.2, 0.9], dtype=DT)
    torch.testing.assert_close(hessian_gradient_covariance(losses, x), half_grad_trace_V(losses, x))


def test_mean_of_Hg_decomposes() -> None:
    # E_i[H_i g_i] = H g + 1/2 grad tr V: the excess over the full-batch product is the covariance
    losses = LogisticProblem(*logistic_data(10, 2, seed=1), l2=0.05)
    x = torch.tensor([0.3, -1.1], dtype=DT)
    g = torch.func.jacrev(losses)(x)
    h = torch.func.hessian(losses)(x)
    lhs = torch.einsum("nij,nj->i", h, g) / len(g)
    rhs = h.mean(0) @ g.mean(0) + half_grad_trace_V(losses, x)
    torch.testing.assert_close(lhs, rhs)


def test_shape_checks() -> None:
    with pytest.raises(ValueError, match="hessians"):
        covariance_of_moments(torch.zeros(3, 2), torch.zeros(3, 2))
