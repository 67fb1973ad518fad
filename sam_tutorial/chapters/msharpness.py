"""What only chapter 4 needs: the published m-sharpness numbers, summaries of an m-sweep (best radius
per m, Kendall's tau), a recorded result checked against the catalogue, and the time to halve tr V.

>>> kendall_tau([1, 2, 3, 4], [10, 20, 30, 40])
1.0
>>> halving_time([0, 1, 2, 3], [8.0, 6.0, 4.0, 3.0])
2.0
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "AF_FIG1",
    "best_per_m",
    "halving_time",
    "kendall_tau",
    "mean_std",
    "summarise",
]

AF_FIG1: dict[str, dict[str, tuple[float, float]]] = {
    "ResNet-18 / CIFAR-10": {
        "ERM": (5.1, 5.1), "random perturbations": (5.1, 5.3), "n-SAM": (5.1, 5.3),
        "128-SAM (best rho)": (4.2, 4.2),
    },
    "ResNet-34 / CIFAR-100": {
        "ERM": (22.8, 22.8), "random perturbations": (22.2, 23.0), "n-SAM": (22.8, 23.2),
        "128-SAM (best rho)": (20.2, 20.2),
    },
}
"""Test error (%) of Andriushchenko & Flammarion (2022), README Fig. 1, read off the plot (low, high
over their radii; a single value where the range is one number). Source: ``reference/paper.md`` §9."""


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value).

    >>> mean_std([1.0, 3.0])
    (2.0, 1.4142135623730951)
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    r"""Kendall's :math:`\tau_b` rank correlation (ties counted as in scipy's default).

    Raises:
        ValueError: for sequences of different lengths or fewer than two items.
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


def summarise(
    records: Iterable[Mapping[str, Any]], keys: Sequence[str]
) -> dict[tuple[Any, float], dict[str, Any]]:
    """Group flat records (each with ``m``, ``rho``, ``seed`` and the ``keys``) by ``(m, rho)``.

    Returns:
        ``{(m, rho): {"n": seeds, key: (mean, std), ...}}``; ``m`` is ``None`` for SGD.
    """
    groups: dict[tuple[Any, float], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["m"], float(r["rho"])), []).append(r)
    out = {}
    for k, rows in groups.items():
        entry: dict[str, Any] = {"n": len(rows)}
        for key in keys:
            vals = [row[key] for row in rows if row.get(key) is not None]
            entry[key] = mean_std(vals) if vals else (math.nan, math.nan)
        out[k] = entry
    return out


def best_per_m(
    summary: Mapping[tuple[Any, float], Mapping[str, Any]], key: str = "test_acc"
) -> dict[Any, float]:
    """The radius with the largest mean ``key`` for every m of a :func:`summarise` table."""
    best: dict[Any, float] = {}
    for (m, rho), entry in summary.items():
        if m not in best or entry[key][0] > summary[(m, best[m])][key][0]:
            best[m] = rho
    return best


def halving_time(times: Sequence[float], values: Sequence[float]) -> float:
    """The first time at which ``values`` falls to half its first value, linearly interpolated
    (``inf`` if it never does)."""
    target = 0.5 * values[0]
    for i in range(1, len(values)):
        if values[i] <= target:
            a, b = values[i - 1], values[i]
            frac = (a - target) / (a - b) if a != b else 1.0
            return times[i - 1] + frac * (times[i] - times[i - 1])
    return math.inf


