"""The scoreboard's rows from result files (chapter 6), on synthetic files: statuses follow the rule."""
# ruff: noqa: E501

from __future__ import annotations

from pathlib import Path

from sam_tutorial.engine.record import write_result_file
from sam_tutorial.engine.recorded import LoadedResults, RecordedFile, find_result, load_recorded
from sam_tutorial.engine.result_formats import BENCH_FORMAT
from sam_tutorial.reproduction import result_rows as rr
from sam_tutorial.reproduction import table_rows as tr


def _study() -> dict:
    def rec(
        label: str, seed: int, trv: float, acc: float, rho: float | None = 0.05, noise: float = 0.0
    ) -> dict:
        # a row of RecordedFile.rows(): the run's tags (arm, rho, noise) beside its final metrics
        return {"label": f"{label}-rho{rho}", "arm": label, "rho": rho or 0.0, "seed": seed, "trace_V": trv,
                "test_acc": acc, "noise": noise}

    compare = []
    for s in range(3):
        compare += [
            rec("sgd", s, 100 + s, 0.60 + 0.001 * s, rho=None),
            rec("sam", s, 80 + s, 0.62 + 0.001 * s),
            rec("rw-sam-uniform-fd", s, 90 + s, 0.621 + 0.001 * s),
            rec("rw-sam-weighted-fd", s, 50 + s, 0.62),
            rec("m-sam-m32", s, 70 + s, 0.63),
            rec("sam", s, 1.0, 0.0, rho=0.2),
        ]  # other rho: left out
    noise = [rec("sam", 0, 0, 0.5, noise=0.6), rec("rw-sam-uniform-fd", 0, 0, 0.55, noise=0.6)]
    return {"compare": compare, "noise": noise}


def test_study_rows_follow_the_rule() -> None:
    rows = {(r.claim, r.statement): r for r in rr.study_rows(_study())}
    assert rows["C11", "tr V(SGD) > tr V(SAM)"].status == "reproduced"
    uniform = next(r for (c, s), r in rows.items() if c == "C11" and "uniform" in s)
    weighted = next(r for (c, s), r in rows.items() if c == "C11" and "weighted" in s)
    assert uniform.status == "contradicted" and weighted.status == "reproduced"
    assert "-10" in uniform.measured and "3 paired seeds" in uniform.measured  # 80 - 90, not retyped
    assert not any(c.startswith("T4") for c, _ in rows)  # no positive control in that regime: no row
    equal = next(r for (c, s), r in rows.items() if c == "C10" and "uniform" in s)
    assert equal.status == "contradicted"  # -0.8 pt on every seed: an effect, where the claim is a tie
    assert rr.study_rows(None)[0].status == "not attempted"


def test_msharpness_rows_compare_best_radii(tmp_path: Path) -> None:
    records = []
    for s in range(3):
        records += [
            {
                "label": "sam-rho0.1",
                "seed": s,
                "tags": {"m": 128, "rho": 0.1},
                "metrics": {"test_acc": 0.50 + 0.001 * s, "trace_V": 9.0 + s},
            },
            {
                "label": "sam-rho0.2",
                "seed": s,
                "tags": {"m": 128, "rho": 0.2},
                "metrics": {"test_acc": 0.40, "trace_V": 1.0},
            },
            {
                "label": "sgd",
                "seed": s,
                "tags": {"m": None, "rho": 0},
                "metrics": {"test_acc": 0.45, "trace_V": 4.0 + 0.5 * s},
            },
            {
                "label": "n-sam",
                "seed": s,
                "tags": {"m": 2000, "rho": 0.1},
                "metrics": {"test_acc": 0.45, "trace_V": 4.0 + 0.5 * s},
            },
            {
                "label": "m8",
                "seed": s,
                "tags": {"m": 8, "rho": 0.05},
                "metrics": {"test_acc": 0.55 + 0.001 * s, "trace_V": 5.0 + s},
            },
        ]
    rec = RecordedFile(
        tmp_path / "m-sharpness-cnn.json",
        {"experiment": "m-sharpness-cnn", "mode": "paper", "records": records},
    )
    acc, nsam = rr.msharpness_rows(rec)  # tr V at the solution is not a test of the claim: no row
    assert nsam.claim == "C6" and nsam.status == "consistent"  # the same tr V seed by seed
    assert acc.status == "reproduced" and "+5" in acc.measured and "m = 8" in acc.statement
    assert rr.msharpness_rows(None)[0].status == "not attempted"


def test_paper_table_rows_use_recorded_files_only() -> None:
    rows = tr.paper_table_rows(LoadedResults())
    assert {r.status for r in rows if r.claim != "T2"} == {"not at this scale"}
    assert {r.status for r in rows if r.claim == "T2"} == {"not attempted"}  # no catalogue entry
    assert len([r for r in rows if r.claim == "T1"]) == 12 and len([r for r in rows if r.claim == "T6"]) == 2
    tie = next(r for r in rows if r.statement.startswith("resnet18 cifar100:") and "SGD" in r.statement)
    assert "≈" in tie.statement  # 78.90 vs 78.91: a tie, no sign claimed
    recs = [
        {"label": lab, "seed": s, "metrics": {"test_acc": acc + 0.0005 * s}}
        for lab, acc in (("sgd", 0.955), ("sam", 0.960), ("rw-sam", 0.958))
        for s in range(3)
    ]
    fake = RecordedFile(
        Path("table1-resnet18-cifar10-paper.json"),
        {"experiment": "table1-resnet18-cifar10", "mode": "paper", "records": recs},
    )
    rows = [
        r
        for r in tr.paper_table_rows(LoadedResults([fake]))
        if r.claim == "T1" and r.statement.startswith("resnet18 cifar10:")
    ]
    assert [r.status for r in rows] == ["reproduced", "contradicted"]
    assert rows[0].measured.startswith("96.05 vs 95.55")


def test_bench_rows(tmp_path: Path) -> None:
    bench = {
        "device": "cuda: X",
        "model": "resnet18",
        "batch": 128,
        "ratios": {"rw-sam/sam": 1.15, "m-sam-m64-loop/sam": 1.3},
        "times": {"sgd": 1.0, "sam": 2.0},
    }
    write_result_file(tmp_path / "bench-cuda.json", BENCH_FORMAT, bench, command="sam-tutorial bench",
                      device="cuda: X", wall_seconds=1.0, commit="abc")
    c10, overhead = rr.bench_rows(tmp_path)
    assert c10.status == "reproduced" and overhead.status == "contradicted" and c10.scale.startswith("CUDA")
    (tmp_path / "bench-cuda.json").unlink()
    write_result_file(tmp_path / "bench-cpu.json", BENCH_FORMAT, {**bench, "device": "cpu"},
                      command="sam-tutorial bench", device="cpu", wall_seconds=1.0, commit="abc")
    assert rr.bench_rows(tmp_path)[1].status == "not at this scale"  # a GPU statement, measured on a CPU
    assert rr.bench_rows(tmp_path / "none")[0].status == "not attempted"


def test_escape_rows_from_the_recorded_run() -> None:
    """Chapter 4's escape run, recorded: the n-SAM row compares with SGD seed by seed (the values are the
    file's, the status the rule's)."""
    loaded = load_recorded(find_result("escape-standard.json").parent)
    rec = loaded.get("escape")
    rows = rr.escape_rows(rec)
    assert len(rows) == 6 and {r.claim for r in rows} == {"C6"}  # four orderings, two sqrt(c_m) law rows
    law = next(r for r in rows if "m = 8 (the √c_m law)" in r.statement)
    sgd, sam, m8 = (
        {r["seed"]: r["metrics"]["trace_V"] for r in rec.records if r["label"] == lab}
        for lab in ("sgd", "sam", "m-sam-m8")
    )
    ratios = [(sgd[s] - m8[s]) / (sgd[s] - sam[s]) - 4 for s in sgd]
    assert f"{sum(ratios) / len(ratios):+.3g}" in law.measured
    nsam = next(r for r in rows if "n-SAM" in r.statement)
    tr_v = {lab: rec.values(lab, "trace_V") for lab in ("n-sam", "sgd")}
    d = sum(tr_v["n-sam"]) / len(tr_v["n-sam"]) - sum(tr_v["sgd"]) / len(tr_v["sgd"])
    assert f"{d:+.3g}" in nsam.measured and nsam.status in ("contradicted", "underpowered")
    assert rr.escape_rows(None)[0].status == "not attempted"
