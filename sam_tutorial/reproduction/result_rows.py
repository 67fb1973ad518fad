"""The scoreboard's rows that come from the chapters' result files (chapter 6): chapter 4's recorded m-sweep
and escape run, chapter 5's recorded study and the step-time benchmarks (the paper's own tables:
:mod:`~sam_tutorial.reproduction.table_rows`). Every comparison is paired by seed and decided by
:func:`sam_tutorial.reproduction.scoreboard.compare` (the rule :data:`~.scoreboard.RULE`); each row names
its minimal effect δ.

Rows that are not tests of their claim are left out: tr V at the end of the m-sweep (chapter 4 shows it
does not track generalisation there), and chapter 5's label-noise runs (SGD does not memorise in that
regime: no positive control).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sam_tutorial.reproduction.claims import Row
from sam_tutorial.reproduction.scoreboard import Comparison, compare, ratio_status

__all__ = [
    "ACC_EFFECT",
    "TRACE_EFFECT",
    "bench_rows",
    "escape_rows",
    "msharpness_rows",
    "study_rows",
]

ACC_EFFECT = 0.005
"""Minimal effect of an accuracy comparison, half a point (the power of a null result is computed for it)."""

TRACE_EFFECT = 0.1
"""Minimal effect of a tr V comparison, as a fraction of the reference arm's mean tr V."""


def _row(
    claim: str,
    statement: str,
    where: str,
    scale: str,
    c: Comparison | None,
    what: str,
    source: str,
    scale_by: float = 1.0,
    unit: str = "",
) -> Row:
    if c is None:
        return Row(
            claim, statement, where, scale, "an arm is missing from the results", "not attempted", source
        )
    return Row(claim, statement, where, scale, f"{what} {c.text(scale_by, unit)}", c.status, source)


def _by_seed(records: list[dict[str, Any]], key: str) -> dict[Any, float]:
    return {r["seed"]: float(r[key]) for r in records if r.get(key) is not None}


# ------------------------------------------------------------------------------------------- chapter 4
def msharpness_rows(recorded: Any | None) -> list[Row]:
    """Chapter 4's recorded m-sweep (1-D CNN on MNIST-1D, 30 % label noise, SGD memorises): test accuracy
    of every m below 128 against SAM (m = 128), each at its best radius (chosen on the test accuracy, so
    biased towards a difference); n-SAM against SGD in tr V at each n-SAM radius."""
    from sam_tutorial.reproduction import sweeps

    where, scale = "ch. 4 §5", "MNIST-1D"
    if recorded is None:
        return [
            Row(
                "C6",
                "m-sweep: smaller m generalises better",
                where,
                scale,
                "no matching results/m-sharpness-cnn.json",
                "not attempted",
                "results/m-sharpness-cnn.json",
            )
        ]
    src = recorded.path.name
    flat = [
        dict(r["metrics"], m=r["tags"]["m"], rho=r["tags"]["rho"], seed=r["seed"]) for r in recorded.records
    ]
    best = sweeps.best_per_m(sweeps.summarise(flat, ["test_acc"]))

    def arm(m: int | None, rho: float, key: str) -> dict[Any, float]:
        return _by_seed([r for r in flat if r["m"] == m and r["rho"] == rho], key)

    rows = []
    ms = sorted((m for m in best if m is not None and m < 128), reverse=True)
    for small in ms if 128 in best else []:  # every m below SAM's, each against SAM
        acc = compare(arm(small, best[small], "test_acc"), arm(128, best[128], "test_acc"), +1, ACC_EFFECT)
        rows.append(
            _row(
                "C6",
                f"m-sweep: m = {small} above SAM (m = 128) in test accuracy, best ρ each "
                "(chosen on test accuracy, and one of several m compared)",
                where,
                scale,
                acc,
                f"m={small} − SAM",
                src,
                100,
                " pt",
            )
        )
    full = sorted(m for m in best if m is not None and m > 128)  # n-SAM: the whole (stand-in) training set
    if full and None in best:
        sgd = arm(None, 0.0, "trace_V") or arm(None, 0, "trace_V")
        for rho in sorted({r["rho"] for r in flat if r["m"] == full[0]}):
            nsam = arm(full[0], rho, "trace_V")
            c = compare(nsam, sgd, 0, TRACE_EFFECT * statistics.fmean(sgd.values())) if nsam and sgd else None
            rows.append(
                _row(
                    "C6",
                    f"m-sweep: n-SAM ≈ SGD in tr V at the solution (n-SAM ρ = {rho:g}; a fixed "
                    "subset stands in for the full gradient)",
                    where,
                    scale,
                    c,
                    "n-SAM − SGD",
                    src,
                )
            )
    return rows


def escape_rows(recorded: Any | None) -> list[Row]:
    """Chapter 4's escape run (``escape``: SGD trained first, then each variant continued from there): tr V
    at the end of the continuation, paired by seed. The claim: tr V falls faster for smaller m (SAM below
    SGD, m = 32 below SAM, m = 8 below m = 32), and n-SAM stays like SGD."""
    where, scale = "ch. 4 §6", "MNIST-1D"
    if recorded is None:
        return [
            Row(
                "C6",
                "escape: smaller m leaves a high-tr V solution faster; n-SAM ≈ SGD",
                where,
                scale,
                "no matching results/escape-*.json",
                "not attempted",
                "results/escape-*.json",
            )
        ]
    src = recorded.path.name
    by_label = {
        label: _by_seed(
            [dict(r["metrics"], seed=r["seed"]) for r in recorded.records if r["label"] == label], "trace_V"
        )
        for label in {r["label"] for r in recorded.records}
    }
    rows = []
    for a, b, sign, text in (
        ("sam", "sgd", -1, "SAM below SGD"),
        ("m-sam-m32", "sam", -1, "m = 32 below SAM"),
        ("m-sam-m8", "m-sam-m32", -1, "m = 8 below m = 32"),
        ("n-sam", "sgd", 0, "n-SAM ≈ SGD"),
    ):
        va, vb = by_label.get(a, {}), by_label.get(b, {})
        c = compare(va, vb, sign, TRACE_EFFECT * statistics.fmean(vb.values())) if va and vb else None
        rows.append(
            _row("C6", f"escape: tr V after the continuation, {text}", where, scale, c, f"{a} − {b}", src)
        )
    rows += _law_rows(by_label, where, scale, src)
    return rows


def _law_rows(by_label: Mapping[str, dict[Any, float]], where: str, scale: str, src: str) -> list[Row]:
    # the sqrt(c_m) penalty law: the drop of tr V below SGD, per seed, is sqrt(B / m) times SAM's (B = 128)
    rows = []
    sgd, sam = by_label.get("sgd", {}), by_label.get("sam", {})
    for m in (32, 8):
        small = by_label.get(f"m-sam-m{m}", {})
        seeds = sorted(set(sgd) & set(sam) & set(small))
        if not seeds:
            continue
        law = math.sqrt(128 / m)
        excess = {s: (sgd[s] - small[s]) / (sgd[s] - sam[s]) - law for s in seeds}
        c = compare(excess, dict.fromkeys(seeds, 0.0), 0, 0.25 * law)
        rows.append(
            _row(
                "C6",
                f"escape: the drop of tr V below SGD is √(128/m) = {law:g} times SAM's for m = {m} "
                "(the √c_m law)",
                where,
                scale,
                c,
                "ratio − law",
                src,
            )
        )
    return rows


# ------------------------------------------------------------------------------------------- chapter 5
def _study_arm(study: Mapping[str, Any], part: str, label: str, key: str) -> dict[Any, float]:
    return _by_seed(
        [r for r in study.get(part, []) if r.get("arm") == label and r.get("rho") in (0.05, 0.0)],
        key,
    )


_RW_ARMS = {
    "rw-sam-uniform-fd": "uniform descent, the package default",
    "rw-sam-weighted-fd": "weighted descent",
}


def study_rows(
    study: Mapping[str, Any] | None, source: str = "results/rw-study-compare-paper.json"
) -> list[Row]:
    """Chapter 5's recorded study (MLP on MNIST-1D, ρ = 0.05 for every arm, untuned): C11 (the tr V
    ordering of Table 6), the accuracy orderings of Table 1 (analogues), and RW-SAM ≈ m-SAM (C10's
    accuracy half). ``study`` maps each part (``compare``, ``lambda``, ``noise``) to the rows of its
    recorded file (:meth:`sam_tutorial.engine.recorded.RecordedFile.rows`: tags ``arm``, ``rho`` beside
    the final metrics)."""
    name, where, scale = Path(source).name, "ch. 5 §5", "MNIST-1D"
    if study is None:
        return [
            Row(
                "C11",
                "tr V: SGD > SAM > RW-SAM (Table 6)",
                where,
                scale,
                "no chapter 5 study",
                "not attempted",
                name,
            )
        ]

    def cmp(a: str, b: str, key: str, sign: int) -> Comparison | None:
        va, vb = _study_arm(study, "compare", a, key), _study_arm(study, "compare", b, key)
        if not va or not vb:
            return None
        effect = ACC_EFFECT if key == "test_acc" else TRACE_EFFECT * statistics.fmean(vb.values())
        return compare(va, vb, sign, effect)

    rows = [
        _row("C11", "tr V(SGD) > tr V(SAM)", where, scale, cmp("sgd", "sam", "trace_V", +1), "Δtr V", name)
    ]
    m_arms = sorted(
        {r["arm"] for r in study.get("compare", []) if str(r.get("arm", "")).startswith("m-sam-m")},
        key=lambda s: -int(s.rsplit("m", 1)[-1]),
    )
    for arm, reading in _RW_ARMS.items():
        rows.append(
            _row(
                "C11",
                f"tr V(SAM) > tr V(RW-SAM, {reading})",
                where,
                scale,
                cmp("sam", arm, "trace_V", +1),
                "Δtr V",
                name,
            )
        )
        rows.append(
            _row(
                "T1",
                f"MNIST-1D analogue, ρ = 0.05 untuned: test acc. RW-SAM ({reading}) > SAM",
                where,
                scale,
                cmp(arm, "sam", "test_acc", +1),
                "Δacc.",
                name,
                100,
                " pt",
            )
        )
        if m_arms:
            m = m_arms[0].rsplit("m", 1)[-1]
            rows.append(
                _row(
                    "C10",
                    f"test acc. RW-SAM ({reading}) ≈ m-SAM (m = {m}; the paper: m = 64)",
                    where,
                    scale,
                    cmp(arm, m_arms[0], "test_acc", 0),
                    "Δacc.",
                    name,
                    100,
                    " pt",
                )
            )
    rows.append(
        _row(
            "T1",
            "MNIST-1D analogue, ρ = 0.05 untuned: test acc. SAM > SGD",
            where,
            scale,
            cmp("sam", "sgd", "test_acc", +1),
            "Δacc.",
            name,
            100,
            " pt",
        )
    )
    return rows


# ------------------------------------------------------------------------------------------- cost
def bench_rows(folder: str | Path) -> list[Row]:
    """C10 from the recorded benchmarks ``bench-*.json`` (step-time ratios): RW-SAM ≈ 7/6 of SAM on every
    device; m-SAM (m = 64) ≈ 2× SAM, a GPU statement (on a CPU: not at this scale)."""
    from sam_tutorial.engine.recorded import read_result
    from sam_tutorial.published import OVERHEAD_CLAIM

    rows = []
    m = int(OVERHEAD_CLAIM["m"])
    for path in sorted(Path(folder).glob("bench-*.json")):
        bench = read_result(path)
        device = str(bench["device"]).split(":")[0].upper()
        scale = f"{device} ({bench['model']}, B = {bench['batch']})"
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
        key = f"m-sam-m{m}-loop/sam"
        if key in ratios:
            r = ratios[key]
            gpu = device == "CUDA"
            rows.append(
                Row(
                    "C10",
                    f"m-SAM (m = {m}) costs ≈ 2× SAM (a GPU statement)",
                    "appendix",
                    scale,
                    f"{key} = {r:.3f}" + ("" if gpu else " (a CPU does the same arithmetic either way)"),
                    ratio_status(r, OVERHEAD_CLAIM["m-sam/sam"]) if gpu else "not at this scale",
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
