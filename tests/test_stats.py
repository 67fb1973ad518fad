"""Tests of the book's statistics module: closed forms, independent computations, invariants."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from sam_tutorial import stats


def test_sample_std_is_ddof_one() -> None:
    x = [1.0, 2.0, 4.0, 7.0]
    mean = sum(x) / 4
    assert stats.sample_std(x) == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in x) / 3))
    assert stats.standard_error(x) == pytest.approx(stats.sample_std(x) / 2)
    assert math.isnan(stats.sample_std([3.0]))
    with pytest.raises(ValueError, match="empty"):
        stats.mean_std([])


def test_paired_differences_align_by_seed() -> None:
    a = {2: 5.0, 0: 1.0, 1: 3.0}
    b = {1: 1.0, 0: 0.5, 7: 9.0}
    assert stats.paired_differences(a, b) == {0: 0.5, 1: 2.0}
    with pytest.raises(ValueError, match="no shared seed"):
        stats.paired_differences({0: 1.0}, {1: 1.0})
    with pytest.raises(ValueError, match="seed sets differ"):
        stats.paired_differences(a, b, require_same_seeds=True)


@pytest.mark.parametrize("t", [-7.3, -1.0, -0.2, 0.0, 0.5, 2.0, 31.8])
def test_t_cdf_closed_forms(t: float) -> None:
    # df = 1 is Cauchy, df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
    assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.9995])
def test_t_quantile_closed_forms(p: float) -> None:
    assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
    alpha = 4 * p * (1 - p)
    assert stats.t_quantile(p, 2) == pytest.approx(2 * (p - 0.5) * math.sqrt(2 / alpha), rel=1e-10)
    # df = 4: t = sign * 2 sqrt(q - 1), q = cos(arccos(sqrt(alpha)) / 3) / sqrt(alpha)
    q = math.cos(math.acos(math.sqrt(alpha)) / 3) / math.sqrt(alpha)
    assert stats.t_quantile(p, 4) == pytest.approx(2 * math.sqrt(q - 1), rel=1e-9)
    assert stats.t_quantile(1 - p, 7) == pytest.approx(-stats.t_quantile(p, 7))


def test_t_quantile_known_values_and_monte_carlo() -> None:
    assert stats.t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)
    assert stats.t_quantile(0.975, 9) == pytest.approx(2.262157, abs=1e-6)
    assert stats.t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    assert stats.t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-4)
    # an independent route: t = Z / sqrt(chi2_9 / 9) simulated
    rng = np.random.default_rng(0)
    n = 400_000
    t = rng.standard_normal(n) / np.sqrt(rng.chisquare(9, n) / 9)
    assert np.mean(t > stats.t_quantile(0.975, 9)) == pytest.approx(
        0.025, abs=4 * math.sqrt(0.025 * 0.975 / n)
    )


def test_regularized_beta_closed_form() -> None:
    # I_x(a, 1) = x^a and I_x(1, b) = 1 - (1 - x)^b
    for x in (0.01, 0.3, 0.77, 0.99):
        assert stats.regularized_beta(x, 2.5, 1.0) == pytest.approx(x**2.5, rel=1e-12)
        assert stats.regularized_beta(x, 1.0, 3.5) == pytest.approx(1 - (1 - x) ** 3.5, rel=1e-12)


def test_t_interval_and_its_coverage() -> None:
    iv = stats.t_interval({0: 0.038, 1: 0.071, 2: 0.039})
    assert iv.n == 3 and iv.df == 2
    assert iv.mean == pytest.approx(0.049333, abs=1e-6)
    assert iv.high - iv.mean == pytest.approx(4.302653 * iv.se, rel=1e-6)
    # coverage: the 95 % interval holds the true mean about 95 % of the time
    rng = np.random.default_rng(1)
    draws = rng.normal(1.0, 2.0, size=(4000, 4))
    covered = [(iv := stats.t_interval(row)).low < 1.0 < iv.high for row in draws]
    assert np.mean(covered) == pytest.approx(0.95, abs=4 * math.sqrt(0.95 * 0.05 / 4000))
    single = stats.t_interval([1.0])
    assert single.low == -math.inf and not single.excludes_zero


def test_welch_interval_equals_pooled_for_equal_sizes_and_spreads() -> None:
    a, b = [1.0, 2.0, 3.0], [0.0, 1.0, 2.0]
    iv = stats.welch_interval(a, b)
    assert iv.mean == pytest.approx(1.0)
    assert iv.df == pytest.approx(4.0)
    assert iv.se == pytest.approx(math.sqrt(2 * 1.0 / 3))


def test_power_at_zero_effect_is_the_level_and_matches_simulation() -> None:
    for n in (2, 3, 9):
        assert stats.paired_power(0.0, 1.0, n) == pytest.approx(0.05, abs=1e-6)
    # noncentral t by simulation
    rng = np.random.default_rng(2)
    n, delta, sigma, trials = 5, 0.25, 0.184, 200_000
    d = rng.normal(delta, sigma, size=(trials, n))
    tstat = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    simulated = np.mean(np.abs(tstat) > stats.t_quantile(0.975, n - 1))
    assert stats.paired_power(delta, sigma, n) == pytest.approx(simulated, abs=4 * math.sqrt(0.25 / trials))
    assert (
        stats.paired_power(delta, sigma, 2)
        < stats.paired_power(delta, sigma, 3)
        < stats.paired_power(delta, sigma, 9)
    )
    assert stats.seeds_for_power(1.0, 1.0) == 10  # the textbook value for a one-sd effect


def test_decide_verdicts() -> None:
    assert stats.decide({0: 0.038, 1: 0.071, 2: 0.039}, min_effect=0.02).verdict == "effect"
    assert stats.decide([-0.038, -0.071, -0.039], min_effect=0.02).direction == -1
    # tight null: the test could have seen 1.0
    tight = stats.decide([0.01, -0.01, 0.02, -0.02, 0.0, 0.005, -0.005, 0.01], min_effect=1.0)
    assert tight.verdict == "no effect detected" and tight.power > 0.8
    # loose null: it could not
    assert stats.decide([1.0, -1.2, 0.5], min_effect=0.1).verdict == "underpowered"
    assert stats.decide([5.0], min_effect=0.1).verdict == "underpowered"
    with pytest.raises(ValueError, match="min_effect"):
        stats.decide([1.0, 2.0], min_effect=0.0)


def test_simulated_rule_has_its_level_and_the_computed_power() -> None:
    sim = stats.simulate_rule(3, effect=0.25, sigma=0.184, trials=40_000, seed=3)
    tol = 4 * math.sqrt(0.25 / 40_000)
    assert sim.false_call_rate == pytest.approx(0.05, abs=tol)
    assert sim.power == pytest.approx(stats.paired_power(0.25, 0.184, 3), abs=tol)
    assert sum(sim.null_verdicts.values()) == pytest.approx(1.0)


def test_rank_correlations() -> None:
    assert stats.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # tau_b with ties, by hand: pairs (c, d, tied in x only, in y only) = (3, 1, 1, 1) -> 2 / sqrt(5 * 5)
    assert stats.kendall_tau([1, 1, 2, 3], [1, 2, 3, 2]) == pytest.approx(2 / 5)
    # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1))
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    assert stats.spearman(x, y) == pytest.approx(1 - 6 * 4 / (5 * 24))
    assert stats.spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)


def test_linear_fit_slope_se_matches_simulated_spread() -> None:
    x = np.linspace(0, 1, 8)
    fit = stats.linear_fit(x, 3 * x + 1)
    assert (
        fit.slope == pytest.approx(3)
        and fit.intercept == pytest.approx(1)
        and fit.slope_se == pytest.approx(0)
    )
    rng = np.random.default_rng(4)
    slopes, ses = [], []
    for _ in range(3000):
        f = stats.linear_fit(x, 2 * x + rng.normal(0, 0.5, x.size))
        slopes.append(f.slope)
        ses.append(f.slope_se)
    assert np.std(slopes) == pytest.approx(0.5 / math.sqrt(((x - x.mean()) ** 2).sum()), rel=0.05)
    assert np.sqrt(np.mean(np.square(ses))) == pytest.approx(np.std(slopes), rel=0.05)
    assert stats.loglog_slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        stats.loglog_fit([1, 2], [0, 1])


def test_halving_time_interpolates() -> None:
    assert stats.halving_time([0, 1, 2, 3], [8.0, 6.0, 4.0, 3.0]) == 2.0
    assert stats.halving_time([0, 2], [4.0, 0.0]) == 1.0
    assert stats.halving_time([0, 1], [4.0, 3.0]) == math.inf


def test_weighted_fit_uses_the_known_errors() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0])
    sigma = np.array([0.1, 0.2, 0.1, 0.4])
    fit = stats.linear_fit(x, 2 * x + 1, sigma)
    w = 1 / sigma**2
    xm = (w * x).sum() / w.sum()
    assert fit.slope == pytest.approx(2) and fit.slope_se == pytest.approx(
        1 / math.sqrt((w * (x - xm) ** 2).sum())
    )
    assert math.isinf(fit.df)
    # the stated s.e. is the spread of the fitted slope under those errors
    rng = np.random.default_rng(5)
    slopes = [stats.linear_fit(x, 2 * x + rng.normal(0, sigma), sigma).slope for _ in range(4000)]
    assert np.std(slopes) == pytest.approx(fit.slope_se, rel=0.05)
    assert stats.loglog_fit([1, 2], [1, 4], [0.1, 0.4]).slope_se == pytest.approx(
        math.sqrt(0.1**2 + 0.1**2) / math.log(2)
    )


def test_kendall_tau_known_values() -> None:
    # scipy.stats.kendalltau's documented example (tau-b with ties)
    assert stats.kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173)
    assert stats.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0


def test_kendall_tau_without_ties_counts_pairs() -> None:
    rng = random.Random(0)
    x = [rng.random() for _ in range(9)]
    y = [rng.random() for _ in range(9)]
    pairs = list(itertools.combinations(range(9), 2))
    brute = sum(1 if (x[i] - x[j]) * (y[i] - y[j]) > 0 else -1 for i, j in pairs) / len(pairs)
    assert stats.kendall_tau(x, y) == pytest.approx(brute)
