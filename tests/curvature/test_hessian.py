"""Tests for sam_tutorial.curvature: Hessian-vector products and Lanczos against the explicit Hessian
(torch.autograd.functional.hessian), Hutchinson's estimator and the probe-variance formulas (C9)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from sam_tutorial.curvature import hessian, hutchinson
from sam_tutorial.sgn.functional import flat_params

CE = nn.CrossEntropyLoss(reduction="none")


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    return model, torch.randn(12, 4).double(), torch.randint(0, 3, (12,))


MODEL, X, Y = _problem()


def _explicit_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reverse-over-reverse Hessian of the mean loss in the flat parameters (independent route)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def f(w: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, w.split(sizes), shapes)}
        return CE(functional_call(model, params, (x,)), y).mean()

    return torch.autograd.functional.hessian(f, flat_params(model))


H = _explicit_hessian(MODEL, X, Y)
P = H.shape[0]


def test_hessian_vector_products_equal_the_explicit_hessian() -> None:
    v = torch.randn(5, P, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(
        hessian.hessian_vector_product(MODEL, CE, X, Y, v), v @ H, rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        hessian.hessian_vector_product(MODEL, CE, X, Y, v[0]), H @ v[0], rtol=0, atol=1e-12
    )
    torch.testing.assert_close(hessian.hessian_matrix(MODEL, CE, X, Y), H, rtol=0, atol=1e-12)


def test_top_eigenvalues_equal_eigvalsh_of_the_explicit_hessian() -> None:
    expected = torch.linalg.eigvalsh(H).flip(0)
    assert float(expected[-1]) < 0 < float(expected[0])  # indefinite: "largest" means algebraic
    exact = hessian.top_eigenvalues(MODEL, CE, X, Y, k=4, n_iter=P)
    torch.testing.assert_close(exact, expected[:4], rtol=0, atol=1e-10)
    default = hessian.top_eigenvalues(MODEL, CE, X, Y, k=2)
    torch.testing.assert_close(default, expected[:2], rtol=1e-8, atol=0)


def test_lanczos_survives_breakdown_on_a_low_rank_operator() -> None:
    # rank 3 with a repeated eigenvalue: the Krylov space of any start vector is at most 3-dimensional
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    lam = torch.tensor([5.0, 2.0, 2.0, -1.0] + [0.0] * 6, dtype=torch.float64)
    a = q @ torch.diag(lam) @ q.T
    ritz = hessian.lanczos(lambda v: a @ v, 10, 10, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ritz, lam.sort().values, rtol=0, atol=1e-10)


def test_hutchinson_is_exact_for_a_diagonal_hessian_with_rademacher_probes() -> None:
    model = nn.Linear(6, 1, bias=False).double()
    x = torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64))  # H = (1/6) diag(1, 4, ..., 36)
    mse = lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2  # noqa: E731
    est = hutchinson.hessian_trace(model, mse, x, torch.zeros(6), n_probes=1, seed=3)
    assert float(est) == pytest.approx(sum(i * i for i in range(1, 7)) / 6, rel=1e-14)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_converges_to_the_exact_trace(probe: str) -> None:
    exact = float(H.trace())
    sd = math.sqrt(float(hutchinson.probe_variance(H, kind=probe)))
    errors = []
    for n in (16, 1024):
        est = float(hutchinson.hessian_trace(MODEL, CE, X, Y, n_probes=n, probe=probe, block_size=64, seed=0))
        errors.append(abs(est - exact))
        assert errors[-1] < 4 * sd / math.sqrt(n)
    assert errors[1] < errors[0]


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_C9_probe_variance_formulas(probe: str) -> None:
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(50, generator=gen, dtype=torch.float64)
    z = hutchinson.make_probes(200_000, 50, kind=probe, generator=gen, dtype=torch.float64)
    samples = (z @ g) ** 2
    formula = 2 * (g.norm() ** 4 - (g**4).sum()) if probe == "rademacher" else 2 * g.norm() ** 4
    torch.testing.assert_close(
        hutchinson.probe_variance(torch.outer(g, g), kind=probe), formula, rtol=1e-12, atol=0
    )
    assert float(samples.mean()) == pytest.approx(float(g.norm() ** 2), rel=0.01)  # unbiased for ||g||^2
    assert float(samples.var()) == pytest.approx(float(formula), rel=0.04)
    # and for a Hessian: per-probe Hutchinson samples z^T H z from batched products
    zh = hutchinson.make_probes(4000, P, kind=probe, generator=gen, dtype=torch.float64)
    quad = (zh * hessian.hessian_vector_product(MODEL, CE, X, Y, zh)).sum(1)
    assert float(quad.var()) == pytest.approx(float(hutchinson.probe_variance(H, kind=probe)), rel=0.1)


def test_probe_variances_match_enumeration_and_sampling() -> None:
    """Rademacher: the closed form equals the variance over all 2^7 sign vectors (exactly); Gaussian:
    it agrees with 200,000 sampled probes within 5 standard errors; and Rademacher is the smaller,
    by exactly 2 Σ_j A_jj² of the symmetric part."""
    a = torch.randn(7, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=7)), dtype=torch.float64)
    quad = torch.einsum("ki,ij,kj->k", signs, a, signs)
    torch.testing.assert_close(hutchinson.probe_variance(a), quad.var(unbiased=False), rtol=1e-12, atol=0)
    z = torch.randn(200_000, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    samples = torch.einsum("ki,ij,kj->k", z, a, z)
    centred = (samples - samples.mean()).square()
    se = float(centred.std() / len(samples) ** 0.5)
    assert abs(float(centred.mean() - hutchinson.probe_variance(a, kind="gaussian"))) < 5 * se
    gap = hutchinson.probe_variance(a, kind="gaussian") - hutchinson.probe_variance(a)
    torch.testing.assert_close(gap, 2 * a.diagonal().square().sum(), rtol=1e-12, atol=0)


def test_batchnorm_runs_in_eval_mode_by_default_and_is_left_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 1.5)
    model.train()
    x, y = torch.randn(8, 3).double(), torch.randint(0, 2, (8,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    default = hessian.hessian_matrix(model, CE, x, y)
    batch_stats = hessian.hessian_matrix(model, CE, x, y, eval_mode=False)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    torch.testing.assert_close(default, _explicit_hessian(model.eval(), x, y), rtol=0, atol=1e-12)
    torch.testing.assert_close(batch_stats, _explicit_hessian(model.train(), x, y), rtol=0, atol=1e-12)
    assert not torch.allclose(default, batch_stats)


def test_bad_arguments_raise_value_error_naming_them() -> None:
    with pytest.raises(ValueError, match="k must be"):
        hessian.top_eigenvalues(MODEL, CE, X, Y, k=0)
    with pytest.raises(ValueError, match="k must be"):
        hessian.top_eigenvalues(MODEL, CE, X, Y, k=P + 1)
    with pytest.raises(ValueError, match="n_iter"):
        hessian.top_eigenvalues(MODEL, CE, X, Y, k=3, n_iter=2)
    with pytest.raises(ValueError, match="n_probes"):
        hutchinson.hessian_trace(MODEL, CE, X, Y, n_probes=0)
    with pytest.raises(ValueError, match="probe"):
        hutchinson.hessian_trace(MODEL, CE, X, Y, probe="cauchy")
    with pytest.raises(ValueError, match="vectors"):
        hessian.hessian_vector_product(MODEL, CE, X, Y, torch.zeros(P + 1))
    with pytest.raises(ValueError, match="kind"):
        hutchinson.make_probes(2, 3, kind="uniform")
    with pytest.raises(ValueError, match="square"):
        hutchinson.probe_variance(torch.zeros(2, 3))
