"""Tests for sam_tutorial.sgn.monte_carlo: sampled batches, autograd mini-batch gradients, Monte Carlo moments
and the covariance mismatch, against loops, exact enumeration and the closed forms of
sam_tutorial.sgn.variance (claims C1 and C2, and Cov(xi) = c_B V as a matrix)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from sam_tutorial.sgn import batches as batch_law
from sam_tutorial.sgn import monte_carlo, per_sample, variance

CE = nn.CrossEntropyLoss(reduction="none")


def _problem(n: int = 7, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(n, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    return model, x, y


def _loop_batch_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    params = list(model.parameters())
    loss = CE(model(x[idx]), y[idx]).mean()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def test_sample_batches_without_replacement_are_uniform_subsets() -> None:
    n, b, num = 5, 2, 20000
    batches = monte_carlo.sample_batches(n, b, num, generator=torch.Generator().manual_seed(3))
    assert batches.shape == (num, b) and batches.dtype == torch.int64
    assert all(len(set(r)) == b for r in batches.tolist())
    counts: dict[tuple[int, ...], int] = {}
    for row in batches.sort(dim=1).values.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert len(counts) == math.comb(n, b)
    p = 1 / math.comb(n, b)
    se = math.sqrt(p * (1 - p) / num)
    assert all(abs(c / num - p) < 5 * se for c in counts.values())


def test_sample_batches_with_replacement_are_iid_uniform() -> None:
    n, b, num = 3, 2, 18000
    gen = torch.Generator().manual_seed(4)
    batches = monte_carlo.sample_batches(n, b, num, replacement=True, generator=gen)
    codes = (batches[:, 0] * n + batches[:, 1]).bincount(minlength=n * n).double() / num
    p = 1 / n**b
    assert (codes - p).abs().max() < 5 * math.sqrt(p * (1 - p) / num)
    # about 1/n of the batches repeat an index, which sampling without replacement never does
    assert abs(float((batches[:, 0] == batches[:, 1]).double().mean()) - 1 / n) < 0.02


def test_sample_batches_repeat_with_the_default_generator() -> None:
    """The default is a generator seeded with 0: the same rows as an explicit seed 0, other rows than
    seed 1, and the rows vary (a constant function would pass the first assert alone)."""
    def seeded(seed: int) -> torch.Tensor:
        return monte_carlo.sample_batches(9, 4, 6, generator=torch.Generator().manual_seed(seed))

    default = monte_carlo.sample_batches(9, 4, 6)
    assert torch.equal(default, monte_carlo.sample_batches(9, 4, 6))
    assert torch.equal(default, seeded(0)) and not torch.equal(default, seeded(1))
    assert len({tuple(row.sort().values.tolist()) for row in default}) > 1


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_batch_grads_equal_a_python_loop(chunk_size: int | None) -> None:
    model, x, y = _problem()
    gen = torch.Generator().manual_seed(1)
    batches = monte_carlo.sample_batches(7, 4, 5, replacement=True, generator=gen)
    got = monte_carlo.batch_grads(model, CE, x, y, batches, chunk_size=chunk_size)
    want = torch.stack([_loop_batch_grad(model, x, y, idx) for idx in batches])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_batch_grads_of_single_samples_are_the_per_sample_gradients() -> None:
    model, x, y = _problem()
    got = monte_carlo.batch_grads(model, CE, x, y, torch.arange(7).unsqueeze(1))
    torch.testing.assert_close(got, per_sample.per_sample_grads(model, CE, x, y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("replacement", [False, True])
def test_C1_by_enumerating_every_batch_with_autograd(replacement: bool) -> None:
    """Averaging autograd batch gradients over every batch gives grad f and the closed-form E||g||^2."""
    n, b = 6, 3
    model, x, y = _problem(n)
    grads = per_sample.per_sample_grads(model, CE, x, y)
    rows = itertools.product(range(n), repeat=b) if replacement else itertools.combinations(range(n), b)
    batches = torch.tensor(list(rows))
    g = monte_carlo.batch_grads(model, CE, x, y, batches)
    torch.testing.assert_close(g.mean(0), grads.mean(0), rtol=1e-10, atol=1e-12)
    closed = batch_law.expected_sq_batch_grad_norm(grads, b, replacement=replacement)
    torch.testing.assert_close(g.square().sum(1).mean(), closed, rtol=1e-10, atol=1e-12)
    # the full covariance matrix, not only its trace: Cov(xi) = c_B V exactly
    c = batch_law.batch_noise_coefficient(n, b, replacement=replacement)
    assert float(monte_carlo.covariance_mismatch(g - grads.mean(0), grads, c)) < 1e-6


@pytest.mark.parametrize("replacement", [False, True])
def test_monte_carlo_agrees_with_the_closed_forms(replacement: bool) -> None:
    n = 10
    model, x, y = _problem(n, seed=2)
    grads = per_sample.per_sample_grads(model, CE, x, y)
    full = grads.mean(0)
    norms = []
    for b in (1, 3, 6):
        batches = monte_carlo.sample_batches(n, b, 4000, replacement=replacement,
                                           generator=torch.Generator().manual_seed(b))
        mc = monte_carlo.monte_carlo_moments(monte_carlo.batch_grads(model, CE, x, y, batches), full)
        closed = batch_law.expected_sq_batch_grad_norm(grads, b, replacement=replacement)
        assert abs(float(mc.sq_norm - closed)) < 4 * float(mc.sq_norm_se)
        c = batch_law.batch_noise_coefficient(n, b, replacement=replacement)
        assert abs(float(mc.trace_cov) - c * float(variance.sgn_trace(grads))) < 4 * float(mc.trace_cov_se)
        exact = batch_law.batch_grad_moments(grads, b, replacement=replacement, max_batches=10**6)
        assert abs(float(mc.norm - exact.norm)) < 4 * float(mc.norm_se)
        norms.append(float(exact.norm))
    assert norms[0] > norms[1] > norms[2]  # C2: E||g_B|| falls as B grows


def test_monte_carlo_moments_equal_numpy_formulas() -> None:
    g = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 1.0]])
    full = torch.tensor([1.0, 1.0])
    mc = monte_carlo.monte_carlo_moments(g, full)
    sq = torch.tensor([25.0, 1.0, 2.0], dtype=torch.float64)
    dev = torch.tensor([13.0, 1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(mc.sq_norm, sq.mean())
    torch.testing.assert_close(mc.sq_norm_se, sq.std() / math.sqrt(3))
    torch.testing.assert_close(mc.norm, sq.sqrt().mean())
    torch.testing.assert_close(mc.trace_cov, dev.mean())
    torch.testing.assert_close(mc.trace_cov_se, dev.std() / math.sqrt(3))
    assert mc.num_batches == 3


def test_covariance_mismatch_equals_explicit_matrices() -> None:
    gen = torch.Generator().manual_seed(5)
    xi = torch.randn(9, 6, generator=gen, dtype=torch.float64)
    grads = torch.randn(5, 6, generator=gen, dtype=torch.float64) + 2.0
    gc = grads - grads.mean(0)
    v = gc.T @ gc / 5
    c_hat = xi.T @ xi / 9
    for c in (0.1, 0.7):
        want = torch.linalg.matrix_norm(c_hat - c * v) / torch.linalg.matrix_norm(c * v)
        torch.testing.assert_close(monte_carlo.covariance_mismatch(xi, grads, c), want)


def test_bad_arguments_raise_value_error_naming_them() -> None:
    model, x, y = _problem()
    with pytest.raises(ValueError, match="b must be <= n"):
        monte_carlo.sample_batches(3, 4, 1)
    with pytest.raises(ValueError, match="num_batches"):
        monte_carlo.sample_batches(3, 2, 0)
    with pytest.raises(ValueError, match="batches must index"):
        monte_carlo.batch_grads(model, CE, x, y, torch.tensor([[0, 7]]))
    with pytest.raises(ValueError, match="integer tensor"):
        monte_carlo.batch_grads(model, CE, x, y, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="chunk_size"):
        monte_carlo.batch_grads(model, CE, x, y, torch.zeros(2, 2, dtype=torch.long), chunk_size=0)
    with pytest.raises(ValueError, match="N >= 2"):
        monte_carlo.monte_carlo_moments(torch.zeros(1, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="full_grad"):
        monte_carlo.monte_carlo_moments(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="c must be > 0"):
        monte_carlo.covariance_mismatch(torch.ones(2, 2), torch.eye(2), 0.0)
    with pytest.raises(ValueError, match="V is zero"):
        monte_carlo.covariance_mismatch(torch.ones(2, 2), torch.ones(3, 2), 1.0)
