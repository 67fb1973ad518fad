"""Chapter 6's reproduction scoreboard: one row per claim (C1–C11) and per cell of the paper's tables, with
where the book checks it, at what scale, the measured value, and a status decided by one stated rule.

The measured values come from three places, never from typed numbers:

* small versions of the chapters' own checks, recomputed here through the package
  (:mod:`sam_tutorial.chapters.toy_checks`; claims C1–C9 at toy scale);
* the recorded results of the chapters (``results/m-sharpness-cnn.json`` of chapter 4,
  ``results/rw-study-*-paper.json`` of chapter 5, the benchmarks ``results/bench-*.json``);
* recorded results of the paper's configurations (``results/table*.json``, see
  :mod:`sam_tutorial.engine.recorded`), loaded only while their configuration hash matches the catalogue.

This module holds the rule, the rows and the toy rows; :mod:`sam_tutorial.chapters.result_rows` builds the
rows that come from result files.

>>> difference([0.62, 0.64, 0.63], [0.60, 0.61, 0.59]).status(+1)
'reproduced'
>>> difference([0.60], [0.61]).status(+1)
'consistent'
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RULE",
    "STATUSES",
    "Difference",
    "Row",
    "difference",
    "markdown",
    "ratio_status",
    "scoreboard",
    "toy_rows",
]

STATUSES = ("reproduced", "consistent", "contradicted", "not attempted")

RULE = (
    "**Orderings** (A above B): d = mean(A) − mean(B) over seeds, SE = √(s²_A/n_A + s²_B/n_B). "
    "*Reproduced* if d has the paper's sign and |d| > 2 SE; *contradicted* if it has the opposite sign "
    "and |d| > 2 SE; otherwise *consistent* (always so with a single seed per arm: no SE). "
    "**Equalities** (A ≈ B): *consistent* if |d| ≤ 2 SE, else *contradicted*. "
    "**Checks with a stated test** (an identity within 3 Monte Carlo standard errors, an effect beyond 2, "
    "a log-log slope, a closed form): *reproduced* if the test passes, else *contradicted*. "
    "**Cost ratios**: *reproduced* within 10 % of the paper's ratio, else *contradicted*. "
    "*Not attempted*: no measurement exists (yet)."
)
"""How a row's status is decided, as the chapter states it."""


@dataclass(frozen=True)
class Difference:
    """``mean(a) − mean(b)`` over seeds, its standard error (``None`` with one seed per arm), the counts."""

    diff: float
    se: float | None
    n_a: int
    n_b: int

    def status(self, sign: int) -> str:
        """The ordering rule of :data:`RULE` for a claimed ``sign`` of the difference (+1 or −1)."""
        if self.se is None or self.se == 0 or abs(self.diff) <= 2 * self.se:
            return "consistent"
        return "reproduced" if self.diff * sign > 0 else "contradicted"

    def equal_status(self) -> str:
        """The equality rule of :data:`RULE`."""
        if self.se is None or abs(self.diff) <= 2 * self.se:
            return "consistent"
        return "contradicted"

    def text(self, scale: float = 1.0, unit: str = "") -> str:
        """``d ± SE unit (n = n_a, n_b)``; accuracy points (``unit=" pt"``) with two decimals."""
        fmt = ".2f" if unit.strip() == "pt" else ".3g"
        se = "" if self.se is None else f" ± {scale * self.se:{fmt}}"
        return f"{scale * self.diff:+{fmt}}{se}{unit} (n = {self.n_a}, {self.n_b})"


def difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """:class:`Difference` of two samples (one value per seed)."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if not a or not b:
        raise ValueError("difference needs at least one value on each side")
    se = None
    if len(a) > 1 and len(b) > 1:
        se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return Difference(statistics.fmean(a) - statistics.fmean(b), se, len(a), len(b))


def ratio_status(measured: float, claimed: float, tolerance: float = 0.1) -> str:
    """The cost-ratio rule of :data:`RULE`."""
    return "reproduced" if abs(measured / claimed - 1) <= tolerance else "contradicted"


@dataclass(frozen=True)
class Row:
    """One line of the scoreboard."""

    claim: str
    statement: str
    where: str
    scale: str
    measured: str
    status: str
    source: str


def markdown(
    rows: Iterable[Row | Mapping[str, Any]],
    columns: Sequence[str] = ("claim", "status", "statement", "where", "scale", "measured", "source"),
) -> str:
    """The rows (scoreboard rows, or mappings from column to value) as a Markdown table (``|`` in cells
    escaped)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        values = [row[c] if isinstance(row, Mapping) else getattr(row, c) for c in columns]
        cells = [str(v).replace("|", "\\|") for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- toy scale
_TOY: dict[str, tuple[str, str, str, dict[str, Any], dict[str, Any]]] = {
    # claim: (statement, chapter that checks it at full size, check, quick and standard arguments)
    "C1": (
        "E‖∇f_γ‖² = ‖∇f‖² + c_B tr V",
        "ch. 2 (also 1, 3)",
        "c1_second_moment",
        {"num_batches": 600},
        {"num_batches": 1500},
    ),
    "C2": (
        "Prop. 3.9: E‖∇f_γ‖ falls as |γ| grows",
        "ch. 2",
        "c2_monotone_norm",
        {"num_batches": 500},
        {"num_batches": 1500},
    ),
    "C3": (
        "USAM-family drift −∇(f + ρ/2‖∇f‖² + ρ/2 c_m tr V) + O(ρ²)",
        "ch. 3 §5",
        "c34_drift_order",
        {"family": "usam"},
        {"family": "usam"},
    ),
    "C4": (
        "SAM-family drift −∇(f + ρ E‖∇f_I‖) + O(ρ²)",
        "ch. 3 §5",
        "c34_drift_order",
        {"family": "sam"},
        {"family": "sam"},
    ),
    "C5": (
        "the extended SDE is a weak approximation, O(η + ρ²)",
        "ch. 3 §6",
        "c5_weak_error",
        {"n_paths": 300},
        {"n_paths": 1500},
    ),
    "C6": (
        "smaller m: stronger tr V penalty, high-tr V minima left faster; n-SAM ≈ SGD",
        "ch. 4 §3, §6",
        "c6_valley_escape",
        {"n_paths": 100, "horizon": 2.5},
        {"n_paths": 400, "horizon": 5.0},
    ),
    "C7": (
        "A&F diagonal net: 1-SAM test loss ≪ n-SAM ≈ GD",
        "ch. 4 §4",
        "c7_diagonal_net",
        {"n_iters": 500, "rhos": (0.2, 0.4)},
        {"n_iters": 2000, "rhos": (0.1, 0.2, 0.4)},
    ),
    "C8": ("Gibbs weights solve the entropy-regularised maximisation", "ch. 5", "c8_gibbs_weights", {}, {}),
    "C9": (
        "finite-difference probe: unbiased, Rademacher variance < Gaussian",
        "ch. 5",
        "c9_probe_variance",
        {"n_probes": 4000},
        {"n_probes": 20000},
    ),
}


def toy_rows(quick: bool = False, claims: Iterable[str] | None = None) -> list[Row]:
    """C1–C9 at toy scale, recomputed now (a few seconds in quick mode, about half a minute otherwise)."""
    from sam_tutorial.chapters import toy_checks

    rows = []
    for claim in claims if claims is not None else _TOY:
        statement, where, fn, quick_kw, standard_kw = _TOY[claim]
        check = getattr(toy_checks, fn)(**(quick_kw if quick else standard_kw))
        rows.append(
            Row(
                claim,
                statement,
                where,
                "toy",
                f"{check.measured} [test: {check.test}]",
                "reproduced" if check.passed else "contradicted",
                f"computed here: toy_checks.{fn}",
            )
        )
    return rows


# ------------------------------------------------------------------------------------------- all
def scoreboard(results: str | Path, *, quick: bool = False, toy: bool = True) -> list[Row]:
    """Every row: toy checks (recomputed), chapters 4 and 5's recorded results, benchmarks, paper tables."""
    from sam_tutorial.chapters.result_rows import bench_rows, msharpness_rows, paper_table_rows, study_rows
    from sam_tutorial.engine.recorded import load_recorded

    results = Path(results)
    loaded = load_recorded(results)
    parts = {part: loaded.get(f"rw-study-{part}") for part in ("compare", "lambda", "noise")}
    study = {part: f.rows() for part, f in parts.items() if f is not None} or None
    study_path = results / "rw-study-compare-paper.json"
    rows = toy_rows(quick) if toy else []
    rows += msharpness_rows(loaded.get("m-sharpness-cnn"))
    rows += study_rows(study, str(study_path))
    rows += bench_rows(results)
    rows += paper_table_rows(loaded)
    return rows
