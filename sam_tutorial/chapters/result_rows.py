"""The scoreboard's rows that come from result files (chapter 6): chapter 4's recorded m-sweep, chapter 5's
recorded study, the step-time benchmarks, and recorded runs of the paper's configurations. The status of
each row follows :data:`sam_tutorial.chapters.scoreboard.RULE`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sam_tutorial.chapters.scoreboard import Difference, Row, difference, ratio_status

__all__ = ["bench_rows", "msharpness_rows", "paper_table_rows", "study_rows"]


# ------------------------------------------------------------------------------------------- MNIST-1D
def msharpness_rows(recorded: Any | None) -> list[Row]:
    """Chapter 4's recorded m-sweep (1-D CNN on MNIST-1D with label noise): the m-sharpness effect, test
    accuracy of the smallest m against SAM (m = 128), each at its best radius; tr V of the same runs."""
    statement = "m-sharpness: smaller m generalises better (smallest m vs SAM, best ρ each)"
    def not_attempted(why: str, source: str) -> list[Row]:
        return [Row("C6 (net)", statement, "ch. 4 §5", "MNIST-1D", why, "not attempted", source)]

    if recorded is None:
        return not_attempted("no matching results/m-sharpness-cnn.json", "results/m-sharpness-cnn.json")
    from sam_tutorial.chapters import msharpness

    flat = [
        dict(r["metrics"], m=r["tags"]["m"], rho=r["tags"]["rho"], seed=r["seed"]) for r in recorded.records
    ]
    table = msharpness.summarise(flat, ["test_acc", "trace_V"])
    best = msharpness.best_per_m(table)
    ms = sorted(m for m in best if m is not None and m < 128)
    if 128 not in best or not ms:
        return not_attempted("the sweep lacks SAM or a smaller m", recorded.path.name)
    small = ms[0]
    statement = f"m-sharpness: smaller m generalises better (m = {small} vs SAM, best ρ each)"

    def values(m: int | None, key: str) -> list[float]:
        return [r[key] for r in flat if r["m"] == m and r["rho"] == best[m] and r.get(key) is not None]

    acc = difference(values(small, "test_acc"), values(128, "test_acc"))
    trv = difference(values(small, "trace_V"), values(128, "trace_V"))
    src = recorded.path.name
    rows = [
        Row(
            "C6 (net)",
            statement,
            "ch. 4 §5",
            "MNIST-1D",
            f"test acc. m={small} − SAM: {acc.text(100, ' pt')}",
            acc.status(+1),
            src,
        ),
        Row(
            "C6 (net, tr V)",
            f"tr V at the solution lower for m = {small} than for SAM",
            "ch. 4 §5",
            "MNIST-1D",
            f"tr V m={small} − SAM: {trv.text()}",
            trv.status(-1),
            src,
        ),
    ]
    full = [m for m in best if m is not None and m > 128]  # n-SAM: the perturbation of the whole set
    if full and None in best:
        same = difference(values(full[0], "trace_V"), values(None, "trace_V"))
        rows.append(
            Row(
                "C6 (net, n-SAM)",
                "n-SAM ≈ SGD: tr V at the solution (best ρ)",
                "ch. 4 §5",
                "MNIST-1D",
                f"tr V n-SAM − SGD: {same.text()}",
                same.equal_status(),
                src,
            )
        )
    return rows


def _arm(
    study: Mapping[str, Any], part: str, label: str, key: str, rho: float = 0.05, noise: float | None = None
) -> list[float]:
    return [
        float(r[key])
        for r in study.get(part, [])
        if r.get("arm") == label
        and r.get(key) is not None
        and (r.get("rho") in (rho, 0.0))
        and (noise is None or r.get("noise") == noise)
    ]


_RW_ARMS = {
    "rw-sam-uniform-fd": "uniform descent, the package default",
    "rw-sam-weighted-fd": "weighted descent",
}


def study_rows(
    study: Mapping[str, Any] | None, source: str = "results/rw-study-compare-paper.json"
) -> list[Row]:
    """Chapter 5's recorded study (MLP on MNIST-1D, ρ = 0.05 for every arm): C11 (tr V ordering, the
    CPU analogue of Table 6), accuracy orderings (Table 1's), label noise (Table 4's), and RW-SAM ≈ m-SAM.
    ``study`` maps each part (``compare``, ``lambda``, ``noise``) to the rows of its recorded file
    (:meth:`sam_tutorial.engine.recorded.RecordedFile.rows`)."""
    name = Path(source).name
    if study is None:
        return [
            Row(
                "C11",
                "tr V: SGD > SAM > RW-SAM (Table 6)",
                "ch. 5 §7",
                "MNIST-1D",
                "no chapter 5 study",
                "not attempted",
                name,
            )
        ]
    rows = []
    for arm, reading in _RW_ARMS.items():
        for a, b, statement in (
            ("sgd", "sam", "tr V(SGD) > tr V(SAM)"),
            ("sam", arm, f"tr V(SAM) > tr V(RW-SAM, {reading})"),
        ):
            if arm == "rw-sam-weighted-fd" and a == "sgd":
                continue
            d = _diff(study, "compare", a, b, "trace_V")
            rows.append(_study_row("C11", statement, "ch. 5 §7", d, "tr V", +1, name))
        acc = _diff(study, "compare", arm, "sam", "test_acc")
        rows.append(
            _study_row(
                "T1 (analogue)",
                f"test acc. RW-SAM ({reading}) > SAM",
                "ch. 5 §7",
                acc,
                "acc.",
                +1,
                name,
                scale=100,
            )
        )
        m_arms = sorted(
            {r["arm"] for r in study.get("compare", []) if str(r.get("arm", "")).startswith("m-sam-m")},
            key=lambda s: -int(s.rsplit("m", 1)[-1]),
        )
        if m_arms:
            m_largest = m_arms[0].rsplit("m", 1)[-1]
            eq = _diff(study, "compare", arm, m_arms[0], "test_acc")
            rows.append(
                Row(
                    "≈ m-SAM",
                    f"test acc. RW-SAM ({reading}) ≈ m-SAM (m = {m_largest}; the paper: m = 64)",
                    "ch. 5 §7",
                    "MNIST-1D",
                    "—" if eq is None else f"{eq.text(100, ' pt')}",
                    "not attempted" if eq is None else eq.equal_status(),
                    name,
                )
            )
    acc = _diff(study, "compare", "sam", "sgd", "test_acc")
    rows.append(
        _study_row("T1 (analogue)", "test acc. SAM > SGD", "ch. 5 §7", acc, "acc.", +1, name, scale=100)
    )
    from sam_tutorial.engine.catalog.paper import TABLE4

    for q in sorted({float(r["noise"]) for r in study.get("noise", [])}):
        paper = TABLE4.get(q)
        sign = 1 if paper is None else (1 if paper[2] > paper[1] else -1)
        d = _diff(study, "noise", "rw-sam-uniform-fd", "sam", "test_acc", noise=q)
        rows.append(
            _study_row(
                "T4 (analogue)",
                f"{q:.0%} label noise: RW-SAM (uniform) {'>' if sign > 0 else '<'} SAM",
                "ch. 5 §7",
                d,
                "acc.",
                sign,
                name,
                scale=100,
            )
        )
    return rows


def _diff(
    study: Mapping[str, Any], part: str, a: str, b: str, key: str, noise: float | None = None
) -> Difference | None:
    va, vb = _arm(study, part, a, key, noise=noise), _arm(study, part, b, key, noise=noise)
    return difference(va, vb) if va and vb else None


def _study_row(
    claim: str,
    statement: str,
    where: str,
    d: Difference | None,
    what: str,
    sign: int,
    source: str,
    scale: float = 1.0,
) -> Row:
    if d is None:
        return Row(claim, statement, where, "MNIST-1D", "arm missing from the study", "not attempted", source)
    unit = " pt" if scale == 100 else ""
    return Row(claim, statement, where, "MNIST-1D", f"Δ{what} {d.text(scale, unit)}", d.status(sign), source)


# ------------------------------------------------------------------------------------------- cost
def bench_rows(folder: str | Path) -> list[Row]:
    """C10 and the overhead claim from the recorded benchmarks ``bench-*.json`` (step-time ratios)."""
    from sam_tutorial.chapters.paper_runs import OVERHEAD_CLAIM

    rows = []
    from sam_tutorial.engine.recorded import read_result

    for path in sorted(Path(folder).glob("bench-*.json")):
        bench = read_result(path)
        scale = f"{bench['device'].split(':')[0].upper()} ({bench['model']}, B = {bench['batch']})"
        ratios = bench.get("ratios", {})
        if "rw-sam/sam" in ratios:
            r = ratios["rw-sam/sam"]
            rows.append(
                Row(
                    "C10",
                    "RW-SAM costs ≈ 7/6 of SAM (3F+2B vs 2F+2B)",
                    "ch. 1, 5; appendix",
                    scale,
                    f"rw-sam/sam = {r:.3f}",
                    ratio_status(r, OVERHEAD_CLAIM["rw-sam/sam"]),
                    path.name,
                )
            )
        key = f"m-sam-m{OVERHEAD_CLAIM['m']}-loop/sam"
        if key in ratios:
            r = ratios[key]
            rows.append(
                Row(
                    "overhead",
                    f"m-SAM (m = {OVERHEAD_CLAIM['m']}) costs ≈ 2× SAM",
                    "appendix",
                    scale,
                    f"{key} = {r:.3f}",
                    ratio_status(r, OVERHEAD_CLAIM["m-sam/sam"]),
                    path.name,
                )
            )
    if not rows:
        rows.append(
            Row(
                "C10",
                "RW-SAM costs ≈ 7/6 of SAM",
                "ch. 1, 5",
                "—",
                "no recorded benchmark",
                "not attempted",
                "results/bench-*.json",
            )
        )
    return rows


# ----------------------------------------------------------------------------------------- the paper's tables
_EQUAL = {"test_acc": 0.05, "trace_V": 0.5}
"""Below this gap (accuracy points, tr V units) the paper's two numbers are read as a tie (≈): the paper
gives no standard deviations, and its numbers are rounded to two decimals."""

_KEYS = {"test_acc": "test acc.", "trace_V": "tr V"}


def _gpu_row(claim: str, statement: str, measured: str, status: str, source: str) -> Row:
    """A paper-table cell's row: checked in chapter 6 through the CLI, on CIFAR on a GPU."""
    return Row(claim, statement, "ch. 6 (CLI)", "CIFAR on GPU", measured, status, source)


def paper_table_rows(loaded: Any) -> list[Row]:
    """One row per cell of Tables 1, 2, 4 and 6 (as differences between neighbouring optimizers), measured
    from recorded results of the catalogue's paper experiments (``paper`` mode) where present."""
    from sam_tutorial.chapters.paper_runs import TABLE2, TABLE6
    from sam_tutorial.engine.catalog.paper import TABLE1, TABLE4

    rows = []
    cells: list[tuple[str, str, str, tuple[float, ...]]] = [
        (f"T1 {m} {d}", f"table1-{m}-{d}", "test_acc", v) for (m, d), v in TABLE1.items()
    ]
    cells += [
        (f"T4 {round(q * 100)} %", f"table4-noise{round(q * 100)}", "test_acc", v) for q, v in TABLE4.items()
    ]
    cells += [("T6", "table6-resnet18-cifar10", "trace_V", tuple(v[0] for v in TABLE6.values()))]
    for claim, exp, key, paper in cells:
        rec = loaded.get(exp, "paper") if loaded is not None else None
        labels = ("sgd", "sam", "rw-sam")
        suffix = "" if not exp.startswith("table4") else f"-noise{exp.rsplit('noise', 1)[-1]}"
        for i, j in ((1, 0), (2, 1)):
            a, b = labels[i], labels[j]
            gap = paper[i] - paper[j]
            sign = 0 if abs(gap) < _EQUAL[key] else (1 if gap > 0 else -1)
            relation = {1: ">", -1: "<", 0: "≈"}[sign]
            statement = (
                f"{_KEYS[key]}: {a.upper()} {relation} {b.upper()} (paper {paper[i]:g} vs {paper[j]:g})"
            )
            if rec is None:
                source = f"results/{exp}-paper.json"
                rows.append(_gpu_row(claim, statement, "no recorded result", "not attempted", source))
                continue
            scale = 100.0 if key == "test_acc" else 1.0
            va, vb = rec.values(a + suffix, key), rec.values(b + suffix, key)
            if not va or not vb:
                rows.append(_gpu_row(claim, statement, "runs missing", "not attempted", rec.path.name))
                continue
            d = difference(va, vb)
            means = f"{statistics.fmean(va) * scale:.4g} vs {statistics.fmean(vb) * scale:.4g}"
            status = d.status(sign) if sign else d.equal_status()
            rows.append(_gpu_row(claim, statement, f"{means}: {d.text(scale)}", status, rec.path.name))
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
