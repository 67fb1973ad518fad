"""The scoreboard's rows from result files (chapter 6), on synthetic files: statuses follow the rule."""

from __future__ import annotations

from pathlib import Path

from sam_tutorial.chapters import result_rows as rr
from sam_tutorial.engine.record import write_result_file
from sam_tutorial.engine.recorded import LoadedResults, RecordedFile
from sam_tutorial.engine.result_formats import BENCH_FORMAT


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
    assert "-10" in uniform.measured  # 80 - 90, not retyped
    noise = next(r for (c, _), r in rows.items() if c == "T4 (analogue)")
    assert "60%" in noise.statement and noise.status == "consistent"  # one seed
    assert any(c == "≈ m-SAM" for c, _ in rows)
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
    acc, trv, nsam = rr.msharpness_rows(rec)
    assert nsam.claim == "C6 (net, n-SAM)" and nsam.status == "consistent"  # tr V 4.0 ± 0.6 vs 4.0 ± 0.6
    assert acc.status == "reproduced" and "+5" in acc.measured and trv.status == "reproduced"
    assert rr.msharpness_rows(None)[0].status == "not attempted"


def test_paper_table_rows_use_recorded_files_only() -> None:
    rows = rr.paper_table_rows(LoadedResults())
    assert {r.status for r in rows} == {"not attempted"}
    assert (
        len([r for r in rows if r.claim.startswith("T1")]) == 12
        and len([r for r in rows if r.claim == "T6"]) == 2
    )
    tie = next(r for r in rows if r.claim == "T1 resnet18 cifar100" and "SGD" in r.statement)
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
    rows = [r for r in rr.paper_table_rows(LoadedResults([fake])) if r.claim == "T1 resnet18 cifar10"]
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
    assert rr.bench_rows(tmp_path / "none")[0].status == "not attempted"
