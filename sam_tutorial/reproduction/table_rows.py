"""The scoreboard's rows for the paper's tables (Tables 1, 2, 4 and 6 of Luo et al.), one per pair of
neighbouring optimizers in each cell, measured from recorded runs of the catalogue's paper experiments
(``paper`` mode, ``results/table*.json``) where they exist, paired by seed.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from sam_tutorial.reproduction.claims import Row
from sam_tutorial.reproduction.result_rows import TRACE_EFFECT
from sam_tutorial.reproduction.scoreboard import compare

__all__ = ["paper_table_rows"]


_TIE = {"test_acc": 0.05, "trace_V": 0.5}
"""Below this gap (accuracy points, tr V units) the paper's two numbers are read as a tie (≈): the paper
gives no standard deviations, and its numbers are rounded to two decimals."""

_KEYS = {"test_acc": "test acc.", "trace_V": "tr V"}


def paper_table_rows(loaded: Any) -> list[Row]:
    """One row per cell of Tables 1, 2, 4 and 6 (as differences between neighbouring optimizers), measured
    from recorded results of the catalogue's paper experiments (``paper`` mode) where present. The minimal
    effect of an ordering is the paper's own gap; of a tie, 0.1 points (10 % for tr V)."""
    from sam_tutorial.published import TABLE1, TABLE2, TABLE4, TABLE6

    cells: list[tuple[str, str, str, str, tuple[float, ...]]] = [
        ("T1", f"{m} {d}", f"table1-{m}-{d}", "test_acc", v) for (m, d), v in TABLE1.items()
    ]
    cells += [
        ("T4", f"{round(q * 100)} % noise", f"table4-noise{round(q * 100)}", "test_acc", v)
        for q, v in TABLE4.items()
    ]
    cells += [
        ("T6", "resnet18 cifar10", "table6-resnet18-cifar10", "trace_V", tuple(v[0] for v in TABLE6.values()))
    ]
    rows = []
    for claim, setting, exp, key, paper in cells:
        rec = loaded.get(exp, "paper") if loaded is not None else None
        labels = ("sgd", "sam", "rw-sam")
        suffix = "" if not exp.startswith("table4") else f"-noise{exp.rsplit('noise', 1)[-1]}"
        for i, j in ((1, 0), (2, 1)):
            a, b = labels[i], labels[j]
            gap = paper[i] - paper[j]
            sign = 0 if abs(gap) < _TIE[key] else (1 if gap > 0 else -1)
            relation = {1: ">", -1: "<", 0: "≈"}[sign]
            paper_gap = f"(paper {paper[i]:g} vs {paper[j]:g})"
            statement = f"{setting}: {_KEYS[key]} {a.upper()} {relation} {b.upper()} {paper_gap}"
            if rec is None:
                source = f"results/{exp}-paper.json"
                rows.append(_gpu_row(claim, statement, "no recorded result", "not at this scale", source))
                continue
            scale_by = 100.0 if key == "test_acc" else 1.0
            va, vb = _seeded(rec, a + suffix, key), _seeded(rec, b + suffix, key)
            if not va or not vb:
                rows.append(_gpu_row(claim, statement, "runs missing", "not attempted", rec.path.name))
                continue
            equal = 0.1 / scale_by if key == "test_acc" else TRACE_EFFECT * paper[j]
            effect = abs(gap) / scale_by if sign else equal
            c = compare(va, vb, sign, effect)
            mean_a, mean_b = (statistics.fmean(v.values()) * scale_by for v in (va, vb))
            means = f"{mean_a:.4g} vs {mean_b:.4g}"
            rows.append(_gpu_row(claim, statement, f"{means}: {c.text(scale_by)}", c.status, rec.path.name))
    for setting in TABLE2:
        rows.append(
            Row(
                "T2",
                f"{setting}: RW-SAM > SAM > baseline",
                "—",
                "ImageNet / ViT on GPUs",
                "no catalogue entry",
                "not attempted",
                "—",
            )
        )
    return rows


def _gpu_row(claim: str, statement: str, measured: str, status: str, source: str) -> Row:
    """A row of a CIFAR table cell, checked from the command line on a GPU (chapter 6)."""
    return Row(claim, statement, "ch. 6 (CLI)", "CIFAR on GPU", measured, status, source)


def _seeded(rec: Any, label: str, key: str) -> dict[Any, float]:
    return {
        r["seed"]: float(r["metrics"][key])
        for r in rec.records
        if r["label"] == label and r["metrics"].get(key) is not None and math.isfinite(r["metrics"][key])
    }
