"""Summaries of a radius sweep (chapter 4's m-sweep): mean and sample std over seeds per (m, radius), and the
best radius per m. The statistics themselves are :mod:`sam_tutorial.stats`.

>>> table = summarise([{"m": 8, "rho": 0.1, "seed": s, "acc": a} for s, a in enumerate((0.5, 0.7))], ["acc"])
>>> table[(8, 0.1)]["n"], round(table[(8, 0.1)]["acc"][0], 3)
(2, 0.6)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sam_tutorial.stats import mean_std

__all__ = ["best_per_m", "summarise"]


def summarise(
    records: Iterable[Mapping[str, Any]], keys: Sequence[str]
) -> dict[tuple[Any, float], dict[str, Any]]:
    """Group flat records (each with ``m``, ``rho``, ``seed`` and the ``keys``) by ``(m, rho)``.

    Returns:
        ``{(m, rho): {"n": seeds, key: (mean, sample std), ...}}``; ``m`` is ``None`` for SGD; the std is
        ``nan`` for a single seed.
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
