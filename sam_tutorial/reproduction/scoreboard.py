"""Chapter 6's reproduction scoreboard: one row per tested part of a claim (C1–C11) and per cell of the
paper's tables, with where the book checks it, at what scale, the measured value, and a status decided
by one stated rule (:data:`RULE`, built on :func:`sam_tutorial.stats.decide`).

The measured values come from three places, never from typed numbers:

* small versions of the chapters' own checks, recomputed here through the package
  (:mod:`sam_tutorial.reproduction.toy_checks`; claims C1–C9 at toy scale);
* the recorded results of the chapters (chapter 4's m-sweep and escape run, chapter 5's study, the
  benchmarks), see :mod:`sam_tutorial.reproduction.result_rows`;
* recorded results of the paper's configurations (``results/table*.json``), loaded only while their
  configuration hash matches the catalogue (:mod:`sam_tutorial.engine.recorded`).

>>> compare({0: 0.62, 1: 0.64, 2: 0.63}, {0: 0.60, 1: 0.61, 2: 0.59}, +1, 0.01).status
'reproduced'
>>> compare({0: 0.60}, {0: 0.61}, +1, 0.01).status
'underpowered'
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam_tutorial import stats
from sam_tutorial.reproduction.claims import STATUSES, Row

__all__ = [
    "RULE",
    "STATUSES",
    "Comparison",
    "Row",
    "check_status",
    "compare",
    "markdown",
    "ratio_status",
    "scoreboard",
    "status_of",
    "toy_rows",
]

RULE = (
    "**Comparisons of two optimizers** are paired by seed (same initialisation and data order): "
    "d = A − B per seed, mean ± s.e., and the 95 % Student-t interval on n − 1 degrees of freedom; the "
    "book's one rule (`sam_tutorial.stats.decide`) then says *effect* if the interval excludes 0, *no effect "
    "detected* if it contains 0 and the paired t-test had at least 80 % power to see the row's stated "
    "minimal effect δ, and *underpowered* otherwise (always with one seed). "
    "For an **ordering** (A above B): an effect with the paper's sign is *reproduced*, an effect with the "
    "opposite sign or no effect detected is *contradicted*, else *underpowered*. "
    "For an **equality** (A ≈ B): no effect detected is *consistent*, an effect is *contradicted*, else "
    "*underpowered*. "
    "**Checks with a stated test** (an identity within 3 Monte Carlo standard errors, an effect beyond "
    "the t-interval, a fitted order with its interval, a closed form): *reproduced* if the test passes, "
    "*contradicted* if it fails; a quantity the check cannot tell from zero is *underpowered*. "
    "**Cost ratios**: *reproduced* within 10 % of the paper's ratio, else *contradicted*; a GPU statement "
    "measured on a CPU is *not at this scale*. "
    "*Not at this scale*: the row needs models, data or hardware beyond the CPU book and no recorded "
    "result exists. *Not attempted*: nothing was run for it (no catalogue entry or no result file). "
    "A **claim** is *reproduced* if all its rows are reproduced or consistent, *contradicted* if none is "
    "and one is contradicted, *partly* if some rows are reproduced or consistent and others are not."
)
"""How a row's and a claim's status are decided, as chapter 6 states it."""


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two arms: the decision of :func:`sam_tutorial.stats.decide` and its status."""

    decision: stats.Decision
    status: str
    n_a: int
    n_b: int

    def text(self, scale: float = 1.0, unit: str = "") -> str:
        """``d ± se unit [95 % CI] (n pairs; verdict)``; accuracy points (``unit=" pt"``) with 2 decimals."""
        iv = self.decision.interval
        fmt = ".2f" if unit.strip() == "pt" else ".3g"
        se = "" if math.isnan(iv.se) else f" ± {scale * iv.se:{fmt}}"
        ci = "" if math.isinf(iv.low) else f" [{scale * iv.low:+{fmt}}, {scale * iv.high:+{fmt}}]"
        return f"{scale * iv.mean:+{fmt}}{se}{unit}{ci} ({iv.n} paired seeds; {self.decision.verdict})"


def compare(
    a: Mapping[Hashable, float], b: Mapping[Hashable, float], sign: int, min_effect: float
) -> Comparison:
    """Status of the claim "A above B" (``sign=+1``), "A below B" (``-1``) or "A ≈ B" (``0``) from the
    per-seed values of both arms, paired by seed, with ``min_effect`` the smallest difference that matters.
    """
    if sign not in (-1, 0, 1):
        raise ValueError(f"sign must be +1, -1 or 0 (an equality), got {sign}")
    decision = stats.decide(stats.paired_differences(a, b), min_effect)
    return Comparison(decision, status_of(decision, sign), len(a), len(b))


def status_of(decision: stats.Decision, sign: int) -> str:
    """The row status of :data:`RULE` for a decision on A − B and the claimed ``sign`` (0: A ≈ B)."""
    if sign not in (-1, 0, 1):
        raise ValueError(f"sign must be +1, -1 or 0 (an equality), got {sign}")
    if decision.verdict == "underpowered":
        return "underpowered"
    if sign == 0:
        return "consistent" if decision.verdict == "no effect detected" else "contradicted"
    return "reproduced" if decision.direction == sign else "contradicted"


def check_status(passed: bool | None) -> str:
    """The stated-test rule of :data:`RULE`: ``None`` means the check could not tell its quantity from 0."""
    return "underpowered" if passed is None else "reproduced" if passed else "contradicted"


def ratio_status(measured: float, claimed: float, tolerance: float = 0.1) -> str:
    """The cost-ratio rule of :data:`RULE`."""
    return "reproduced" if abs(measured / claimed - 1) <= tolerance else "contradicted"


def markdown(
    rows: Iterable[Row | Mapping[str, Any]],
    columns: Sequence[str] = ("claim", "status", "statement", "where", "scale", "measured", "source"),
) -> str:
    """The rows (scoreboard rows, or mappings from column to value) as a Markdown table (``|`` in cells
    escaped)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        values = [row[c] if isinstance(row, Mapping) else getattr(row, c) for c in columns]
        cells = [str(v).replace("|", "\\|").replace("\n", " ") for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def toy_rows(quick: bool = False, checks: Iterable[str] | None = None) -> list[Row]:
    """The toy-scale rows (claims C1–C9), recomputed now by :mod:`~sam_tutorial.reproduction.toy_checks`.

    ``quick`` is accepted for the chapter's budget but the toy checks have one size: their verdicts are
    the same in every mode, so the claims index (generated once) and chapter 6 agree.
    """
    from sam_tutorial.reproduction import toy_checks
    from sam_tutorial.reproduction.claims import TOY_CHECKS

    del quick
    rows = []
    for spec in TOY_CHECKS:
        if checks is not None and spec.function not in checks:
            continue
        check = getattr(toy_checks, spec.function)(**spec.kwargs)
        rows.append(
            Row(
                spec.claim,
                spec.statement,
                spec.where,
                "toy",
                f"{check.measured} [test: {check.test}]",
                check_status(check.passed),
                f"computed here: toy_checks.{spec.function}",
            )
        )
    return rows


def scoreboard(results: str | Path, *, quick: bool = False, toy: bool = True) -> list[Row]:
    """Every row: toy checks (recomputed), chapters 4 and 5's recorded results, benchmarks, paper tables."""
    from sam_tutorial.engine.recorded import load_recorded
    from sam_tutorial.reproduction import control_rows, result_rows, table_rows

    results = Path(results)
    loaded = load_recorded(results)
    parts = {part: loaded.get(f"rw-study-{part}") for part in ("compare", "lambda", "noise")}
    study = {part: f.rows() for part, f in parts.items() if f is not None} or None
    study_path = results / "rw-study-compare-paper.json"
    rows = toy_rows(quick) if toy else []
    rows += result_rows.msharpness_rows(loaded.get("m-sharpness-cnn"))
    rows += result_rows.escape_rows(loaded.get("escape"))
    rows += control_rows.escape_rows(loaded.get("controls-escape"))
    rows += control_rows.noise_rows(loaded.get("controls-noise"))
    rows += result_rows.study_rows(study, str(study_path))
    rows += result_rows.bench_rows(results)
    rows += table_rows.paper_table_rows(loaded)
    unknown = {r.status for r in rows} - set(STATUSES)
    if unknown:
        raise AssertionError(f"statuses outside the vocabulary: {unknown}")
    return rows
