r"""The book's statistics, in one place and with one convention (chapter 6, "How the book decides").

Every spread is the **sample** standard deviation (``ddof = 1``), every interval a Student-t interval
for the degrees of freedom actually available, every comparison of two optimizers **paired by seed**
where the seeds are shared (same initialisation, same data order), and every verdict comes from one
rule, :func:`decide`, stated once:

    Let :math:`d_1,\dots,d_n` be the paired differences (one per seed), :math:`\bar d` their mean,
    :math:`s` their sample std and :math:`\mathrm{se}=s/\sqrt n`. The 95 % interval is
    :math:`\bar d\pm t_{0.975,\,n-1}\,\mathrm{se}`.

    * **effect** -- the interval excludes 0 (its sign is the sign of :math:`\bar d`);
    * **no effect detected** -- it contains 0 *and* the paired t-test had at least 80 % power
      (:func:`paired_power`) to detect the stated minimal effect :math:`\delta` at the observed
      :math:`s`;
    * **underpowered** -- otherwise (also for fewer than two seeds).

The rule's false-call rate is the test's level (5 %) for normal differences; its power for ``n`` seeds is
computed exactly by :func:`paired_power` and checked by simulation with :func:`simulate_rule`.

This module is a leaf: it imports only ``math`` and ``numpy``. The Student-t distribution is computed
here from the regularised incomplete beta function (no SciPy), and tested against closed forms.

>>> round(t_quantile(0.975, 2), 6), round(t_quantile(0.975, 9), 6)
(4.302653, 2.262157)
>>> decide({0: 0.038, 1: 0.071, 2: 0.039}, min_effect=0.02).verdict
'effect'
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "VERDICTS",
    "Decision",
    "Interval",
    "LinearFit",
    "RuleSimulation",
    "Verdict",
    "decide",
    "halving_time",
    "kendall_tau",
    "linear_fit",
    "loglog_fit",
    "loglog_slope",
    "mean_se",
    "mean_std",
    "normal_cdf",
    "paired_differences",
    "paired_power",
    "regularized_beta",
    "sample_std",
    "seeds_for_power",
    "simulate_rule",
    "spearman",
    "standard_error",
    "t_cdf",
    "t_interval",
    "t_quantile",
    "welch_interval",
]

Verdict = Literal["effect", "no effect detected", "underpowered"]
VERDICTS: tuple[Verdict, ...] = ("effect", "no effect detected", "underpowered")
"""The three outcomes of :func:`decide`, the book's one decision rule."""

LEVEL = 0.95
"""Confidence level of every interval the book reports."""
POWER = 0.8
"""Power the rule requires before it calls a null result "no effect detected"."""


# ---------------------------------------------------------------------------------------------------
# spread and standard errors


def _floats(values: Iterable[float], name: str = "values") -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=float)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: pass at least one number")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains a non-finite number: {arr.tolist()}")
    return arr


def sample_std(values: Iterable[float]) -> float:
    r"""Sample standard deviation :math:`s=\sqrt{\sum_i(x_i-\bar x)^2/(n-1)}` (``nan`` for one value).

    >>> sample_std([1.0, 3.0])
    1.4142135623730951
    """
    arr = _floats(values)
    return float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def standard_error(values: Iterable[float]) -> float:
    r"""Standard error of the mean, :math:`s/\sqrt n` (``nan`` for one value)."""
    arr = _floats(values)
    return sample_std(arr) / math.sqrt(arr.size)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``nan`` std for a single value).

    >>> mean_std([1.0, 3.0])
    (2.0, 1.4142135623730951)
    """
    arr = _floats(values)
    return float(arr.mean()), sample_std(arr)


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (``nan`` s.e. for a single value)."""
    arr = _floats(values)
    return float(arr.mean()), standard_error(arr)


def paired_differences(
    a: Mapping[Hashable, float], b: Mapping[Hashable, float], *, require_same_seeds: bool = False
) -> dict[Hashable, float]:
    r"""Per-seed differences :math:`d_s=a_s-b_s` over the seeds both mappings hold, in sorted seed order.

    Raises:
        ValueError: if no seed is shared, or (``require_same_seeds``) if the seed sets differ.
    """
    shared = set(a) & set(b)
    if not shared:
        raise ValueError(
            f"no shared seed to pair: first has {sorted(map(str, a))}, second {sorted(map(str, b))}; "
            "run both arms with the same seeds"
        )
    if require_same_seeds and set(a) != set(b):
        raise ValueError(f"seed sets differ: {sorted(map(str, a))} vs {sorted(map(str, b))}")
    keys = sorted(shared, key=lambda k: (str(type(k)), k))
    return {k: float(a[k]) - float(b[k]) for k in keys}


# ---------------------------------------------------------------------------------------------------
# the normal and Student-t distributions


def normal_cdf(x: float) -> float:
    r""":math:`\Phi(x)=\tfrac12\operatorname{erfc}(-x/\sqrt2)`."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _beta_cf(a: float, b: float, x: float) -> float:
    # continued fraction of I_x(a, b) (modified Lentz; Numerical Recipes 6.4)
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def regularized_beta(x: float, a: float, b: float) -> float:
    r"""The regularised incomplete beta function :math:`I_x(a,b)=B(x;a,b)/B(a,b)`, by its continued
    fraction (converges fast for :math:`x<(a+1)/(a+b+2)`; otherwise :math:`1-I_{1-x}(b,a)`)."""
    if not (0.0 <= x <= 1.0) or a <= 0 or b <= 0:
        raise ValueError(f"need 0 <= x <= 1 and a, b > 0; got x={x}, a={a}, b={b}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def _check_df(df: float) -> None:
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}: a t-interval needs at least two values")


def t_cdf(t: float, df: float) -> float:
    r"""Student-t distribution function: for :math:`t\ge0`,
    :math:`F(t)=1-\tfrac12 I_{\nu/(\nu+t^2)}(\nu/2,1/2)`, and :math:`F(-t)=1-F(t)`; ``df = inf`` gives
    :math:`\Phi`."""
    _check_df(df)
    if math.isinf(df):
        return normal_cdf(t)
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    r"""The Student-t quantile :math:`t_{p,\nu}` (:math:`F(t_{p,\nu})=p`), by bisection on :func:`t_cdf`
    to machine precision; ``df`` may be fractional (Welch) or ``inf`` (normal)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")
    _check_df(df)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    r"""A mean with its standard error and the t-interval :math:`\bar x\pm t_{(1+L)/2,\,\nu}\,\mathrm{se}`."""

    mean: float
    se: float
    df: float
    low: float
    high: float
    level: float = LEVEL
    n: int = 0

    @property
    def excludes_zero(self) -> bool:
        """Whether 0 lies outside the interval."""
        return bool(self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        ci = f"{self.level:.0%} CI [{self.low:+.4g}, {self.high:+.4g}]"
        return f"{self.mean:+.4g} ± {self.se:.2g} s.e. ({ci}, n={self.n})"


def _interval(mean: float, se: float, df: float, level: float, n: int) -> Interval:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if not df > 0 or math.isnan(se):
        return Interval(mean, se, df, -math.inf, math.inf, level, n)
    half = _t_crit(df, level) * se
    return Interval(mean, se, df, mean - half, mean + half, level, n)


def t_interval(values: Iterable[float] | Mapping[Any, float], level: float = LEVEL) -> Interval:
    r"""One-sample t-interval with :math:`\nu=n-1` (for paired differences, pass their values). A single
    value gives the infinite interval: nothing can be concluded from one seed."""
    arr = _floats(values.values() if isinstance(values, Mapping) else values)
    return _interval(float(arr.mean()), standard_error(arr), arr.size - 1, level, arr.size)


def welch_interval(a: Iterable[float], b: Iterable[float], level: float = LEVEL) -> Interval:
    r"""Unpaired difference :math:`\bar a-\bar b` with Welch's s.e. :math:`\sqrt{s_a^2/n_a+s_b^2/n_b}` and
    the Welch–Satterthwaite df :math:`\mathrm{se}^4/\sum_k (s_k^2/n_k)^2/(n_k-1)`. Use it only where the
    seeds are not shared; otherwise pair them (:func:`paired_differences`)."""
    xa, xb = _floats(a, "a"), _floats(b, "b")
    mean = float(xa.mean() - xb.mean())
    if xa.size < 2 or xb.size < 2:
        return _interval(mean, math.nan, 0.0, level, int(xa.size + xb.size))
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1)) if se > 0 else math.inf
    return _interval(mean, se, df, level, int(xa.size + xb.size))


# ---------------------------------------------------------------------------------------------------
# the decision rule, its power and its simulated error rates


def paired_power(min_effect: float, sigma: float, n: int, level: float = LEVEL) -> float:
    r"""Power of the two-sided paired t-test at ``level`` for a true mean difference ``min_effect``,
    per-seed spread ``sigma`` and ``n`` seeds (normal differences):

    .. math:: P\big(|T|>c\big),\quad T=\frac{Z+\lambda}{W/\sqrt{k}},\ \lambda=\frac{\delta\sqrt n}{\sigma},
       \ k=n-1,\ c=t_{(1+L)/2,\,k},

    with :math:`Z\sim N(0,1)` and :math:`W\sim\chi_k` independent, i.e. the noncentral t, computed as
    :math:`\int f_{\chi_k}(w)\,[1-\Phi(cw/\sqrt k-\lambda)+\Phi(-cw/\sqrt k-\lambda)]\,dw` by Simpson's
    rule. At ``min_effect = 0`` it equals :math:`1-L` (the false-call rate)."""
    if n < 2:
        return 0.0
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if sigma == 0:
        return 1.0 if min_effect != 0 else 1.0 - level
    return float(_power_grid(np.asarray([abs(min_effect) * math.sqrt(n) / sigma]), n - 1, level)[0])


def _power_grid(ncp: np.ndarray, k: int, level: float, points: int = 1601) -> np.ndarray:
    c = _t_crit(k, level)
    w = np.linspace(0.0, math.sqrt(k) + 14.0, points)
    logf = (k - 1) * np.log(np.maximum(w, 1e-300)) - 0.5 * w * w
    f = np.exp(logf - logf.max()) if k > 1 else np.exp(-0.5 * w * w)
    simpson = np.ones(points)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    weights = f * simpson
    weights /= weights.sum()
    scaled = c * w / math.sqrt(k)
    erfc = np.vectorize(math.erfc)
    out = np.empty(ncp.shape)
    for i, lam in enumerate(ncp.ravel()):
        upper = 0.5 * erfc((scaled - lam) / math.sqrt(2.0))
        lower = 0.5 * erfc((scaled + lam) / math.sqrt(2.0))
        out.flat[i] = float(weights @ (upper + lower))
    return out


def seeds_for_power(
    min_effect: float, sigma: float, power: float = POWER, level: float = LEVEL, max_seeds: int = 1000
) -> int:
    """The smallest number of seeds whose paired t-test reaches ``power`` for ``min_effect``."""
    if min_effect == 0:
        raise ValueError("min_effect must be nonzero: no number of seeds detects an effect of 0")
    for n in range(2, max_seeds + 1):
        if paired_power(min_effect, sigma, n, level) >= power:
            return n
    raise ValueError(f"more than {max_seeds} seeds needed for power {power}")


@dataclass(frozen=True)
class Decision:
    """The verdict of :func:`decide` with everything it rests on."""

    verdict: Verdict
    interval: Interval
    power: float
    min_effect: float

    @property
    def direction(self) -> int:
        """+1 or -1 for an effect (the sign of the mean difference), 0 otherwise."""
        return int(math.copysign(1, self.interval.mean)) if self.verdict == "effect" else 0

    def __str__(self) -> str:
        return f"{self.verdict}: {self.interval}; power {self.power:.2f} at |d| = {self.min_effect:g}"


@functools.lru_cache(maxsize=256)
def _critical_ncp(k: int, level: float, power: float) -> float:
    # the noncentrality at which the paired test reaches `power` (power rises with it): bisection
    lo, hi = 0.0, 1.0
    while _power_grid(np.asarray([hi]), k, level)[0] < power:
        lo, hi = hi, 2.0 * hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _power_grid(np.asarray([mid]), k, level)[0] < power else (lo, mid)
    return hi


def _verdicts(
    mean: np.ndarray, s: np.ndarray, n: int, min_effect: float, level: float, power: float
) -> np.ndarray:
    # the rule, vectorised over experiments: 0 effect, 1 no effect detected, 2 underpowered
    if n < 2:
        return np.full(mean.shape, 2)
    se = s / math.sqrt(n)
    effect = np.abs(mean) > _t_crit(n - 1, level) * se
    effect |= (se == 0) & (mean != 0)
    # power >= target  <=>  |delta| sqrt(n) / s >= critical noncentrality
    powered = (s == 0) | (abs(min_effect) * math.sqrt(n) >= _critical_ncp(n - 1, level, power) * s)
    return np.where(effect, 0, np.where(powered, 1, 2))


@functools.lru_cache(maxsize=256)
def _t_crit(df: float, level: float) -> float:
    return t_quantile(0.5 + level / 2.0, df)


def decide(
    diffs: Iterable[float] | Mapping[Any, float],
    min_effect: float,
    *,
    sigma: float | None = None,
    level: float = LEVEL,
    power: float = POWER,
) -> Decision:
    """The book's one decision rule (stated in this module's docstring) for paired differences.

    Args:
        diffs: per-seed differences (a ``{seed: d}`` mapping from :func:`paired_differences`, or values).
        min_effect: the smallest difference that matters (in the units of ``diffs``); the rule says
            "no effect detected" only if the test had ``power`` to see it.
        sigma: the per-seed spread used for the power; default: the sample std of ``diffs``.
    """
    if min_effect == 0 or not math.isfinite(min_effect):
        raise ValueError(f"min_effect must be a finite nonzero difference that matters, got {min_effect}")
    interval = t_interval(diffs, level)
    if interval.n < 2:
        return Decision("underpowered", interval, 0.0, min_effect)
    s = interval.se * math.sqrt(interval.n) if sigma is None else float(sigma)
    code = int(
        _verdicts(np.asarray([interval.mean]), np.asarray([s]), interval.n, min_effect, level, power)[0]
    )
    return Decision(VERDICTS[code], interval, paired_power(min_effect, s, interval.n, level), min_effect)


@dataclass(frozen=True)
class RuleSimulation:
    """Simulated behaviour of :func:`decide` for ``n`` seeds: fractions of each verdict."""

    n: int
    false_call_rate: float
    """P(verdict "effect") when the true difference is 0."""
    power: float
    """P(verdict "effect" with the right sign) when the true difference is ``effect``."""
    null_verdicts: dict[str, float]
    effect_verdicts: dict[str, float]


def simulate_rule(
    n: int,
    effect: float,
    sigma: float = 1.0,
    *,
    trials: int = 20_000,
    seed: int = 0,
    min_effect: float | None = None,
    level: float = LEVEL,
    power: float = POWER,
) -> RuleSimulation:
    r"""Apply the rule of :func:`decide` to ``trials`` simulated experiments of ``n`` seeds with normal
    differences :math:`N(0,\sigma^2)` (null) and :math:`N(\text{effect},\sigma^2)`, and count the verdicts.

    ``min_effect`` (default ``effect``) is the minimal effect the rule is told about.
    """
    if n < 1 or trials < 1 or effect == 0:
        raise ValueError(f"need n >= 1, trials >= 1 and a nonzero effect; got {n}, {trials}, {effect}")
    rng = np.random.default_rng(seed)
    target = effect if min_effect is None else min_effect
    out = []
    for mean in (0.0, effect):
        d = rng.normal(mean, sigma, size=(trials, n))
        s = d.std(axis=1, ddof=1) if n > 1 else np.zeros(trials)
        codes = _verdicts(d.mean(axis=1), s, n, target, level, power)
        fractions: dict[str, float] = {v: float(np.mean(codes == i)) for i, v in enumerate(VERDICTS)}
        right = float(np.mean((codes == 0) & (np.sign(d.mean(axis=1)) == math.copysign(1, effect))))
        out.append((fractions, right))
    (null, _), (alt, right_sign) = out
    return RuleSimulation(n, null["effect"], right_sign, null, alt)


# ---------------------------------------------------------------------------------------------------
# rank correlations, slopes, crossings


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    r"""Kendall's :math:`\tau_b=(n_c-n_d)/\sqrt{(n_0-n_x)(n_0-n_y)}` (pairs tied in both are dropped,
    as in SciPy's default).

    >>> kendall_tau([1, 2, 3, 4], [10, 20, 30, 40])
    1.0
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two sequences of the same length >= 2, got {len(x)} and {len(y)}")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # ties get their average rank
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    r"""Spearman's :math:`\rho`: Pearson's correlation of the ranks (ties get their average rank)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two sequences of the same length >= 2, got {len(x)} and {len(y)}")
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom else 0.0


@dataclass(frozen=True)
class LinearFit:
    r"""Least-squares line :math:`y=a+bx` with the slope's s.e.
    :math:`\sqrt{\sum r_i^2/(n-2)\,/\,\sum(x_i-\bar x)^2}` and its t-interval on :math:`n-2` df."""

    slope: float
    intercept: float
    slope_se: float
    df: float

    def slope_interval(self, level: float = LEVEL) -> Interval:
        """The t-interval of the slope (infinite when ``df = 0``)."""
        n = self.df + 2 if math.isfinite(self.df) else 0
        return _interval(self.slope, self.slope_se, self.df, level, int(n))


def linear_fit(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    sigma: Sequence[float] | np.ndarray | None = None,
) -> LinearFit:
    r"""Least squares of ``y`` on ``x`` (at least two distinct ``x``).

    With ``sigma`` (known standard errors of the ``y``, e.g. Monte Carlo errors) the fit is weighted,
    :math:`w_i=1/\sigma_i^2`, and the slope's s.e. is :math:`1/\sqrt{\sum_i w_i(x_i-\bar x_w)^2}` on
    ``df = inf`` (the errors are known, not estimated from the residuals).
    """
    xa, ya = _floats(x, "x"), _floats(y, "y")
    if xa.size != ya.size or xa.size < 2 or np.ptp(xa) == 0:
        raise ValueError(f"need >= 2 points with distinct x and equal lengths; got {xa.size}, {ya.size}")
    if sigma is not None:
        sa = _floats(sigma, "sigma")
        if sa.size != xa.size or np.any(sa <= 0):
            raise ValueError(f"sigma needs one positive error per point; got {sa.tolist()}")
        w = 1.0 / sa**2
        xm, ym = float(w @ xa / w.sum()), float(w @ ya / w.sum())
        sxx = float(w @ (xa - xm) ** 2)
        slope = float(w @ ((xa - xm) * (ya - ym)) / sxx)
        return LinearFit(slope, ym - slope * xm, 1.0 / math.sqrt(sxx), math.inf)
    xc = xa - xa.mean()
    slope = float(xc @ (ya - ya.mean()) / (xc @ xc))
    intercept = float(ya.mean() - slope * xa.mean())
    df = int(xa.size - 2)
    resid = ya - intercept - slope * xa
    se = math.sqrt(float(resid @ resid) / df / float(xc @ xc)) if df > 0 else math.nan
    return LinearFit(slope, intercept, se, df)


def loglog_fit(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    sigma: Sequence[float] | np.ndarray | None = None,
) -> LinearFit:
    r"""Least-squares line of :math:`\log y` on :math:`\log x`: the slope is the fitted order of a power
    law :math:`y\propto x^b` (positive ``x``, ``y`` only). ``sigma``: known errors of ``y``, propagated as
    :math:`\sigma_i/y_i` on :math:`\log y_i` (see :func:`linear_fit`)."""
    xa, ya = _floats(x, "x"), _floats(y, "y")
    if np.any(xa <= 0) or np.any(ya <= 0):
        raise ValueError(f"a log-log fit needs positive values; got x={xa.tolist()}, y={ya.tolist()}")
    log_sigma = None if sigma is None else _floats(sigma, "sigma") / ya
    return linear_fit(np.log(xa), np.log(ya), log_sigma)


def loglog_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """The slope of :func:`loglog_fit` alone."""
    return loglog_fit(x, y).slope


def halving_time(times: Sequence[float], values: Sequence[float]) -> float:
    """The first time at which ``values`` falls to half its first value, linearly interpolated
    (``inf`` if it never does).

    >>> halving_time([0, 1, 2, 3], [8.0, 6.0, 4.0, 3.0])
    2.0
    """
    target = 0.5 * values[0]
    for i in range(1, len(values)):
        if values[i] <= target:
            a, b = values[i - 1], values[i]
            frac = (a - target) / (a - b) if a != b else 1.0
            return times[i - 1] + frac * (times[i] - times[i - 1])
    return math.inf
