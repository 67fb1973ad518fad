"""The scoreboard's rows from the recorded control experiments, on synthetic records in their format."""

from __future__ import annotations

from pathlib import Path

from sam_tutorial.engine.catalog import controls as ctl
from sam_tutorial.engine.recorded import RecordedFile
from sam_tutorial.reproduction import control_rows as cr


def _noise_records() -> list[dict]:
    acc = {"sgd": 0.50, "sam": 0.55, "rw-sam-uniform": 0.55, "rw-sam-weighted": 0.40}
    out = []
    for seed, jitter in enumerate((0.0, 0.01, -0.01)):
        for arm, a in acc.items():
            for rho, lam in ctl._settings(arm):
                best = rho == ctl.GRID[arm][0] and lam in (None, ctl.RW_LAMS[0])
                tags = {"arm": arm, "noise": 0.8, "rho": rho, "lam": lam}
                metrics = {
                    "val_acc": 0.6 if best else 0.3,
                    "test_acc": (a if best else 0.1) + jitter,  # the same jitter per seed in every arm
                    "train_acc": 1.0 if arm == "sgd" else 0.7,
                    "train_acc_clean": 0.2,
                }
                out.append(
                    {
                        "label": ctl.noise_label(arm, 0.8, rho, lam),
                        "seed": seed,
                        "tags": tags,
                        "metrics": metrics,
                    }
                )
    return out


def test_noise_rows_pair_the_validation_choices_and_take_the_papers_sign() -> None:
    rec = RecordedFile(
        Path("controls-noise-paper.json"),
        {"experiment": "controls-noise", "mode": "paper", "records": _noise_records()},
    )
    rows = {r.statement.split(": test acc. ")[1].split(",")[0]: r for r in cr.noise_rows(rec)}
    # at 80 % the paper has SAM below SGD: +5 points every seed contradicts it
    assert rows["SAM < SGD"].status == "contradicted" and "+5.00" in rows["SAM < SGD"].measured
    assert "SGD fits 100% of the noisy training labels" in rows["SAM < SGD"].measured
    assert rows["RW-SAM-UNIFORM > SAM"].status == "contradicted"  # exactly equal: a powered null
    assert rows["RW-SAM-WEIGHTED > SAM"].status == "contradicted"  # 15 points below
    assert all("grid's edge" in r.statement for r in rows.values())  # the best radius is the grid's first
    assert cr.noise_rows(None) == []


def test_escape_rows_follow_the_rule() -> None:
    tr_v = {"sgd": 100.0, "n-sam": 100.0, "sam": 80.0, "m-sam-m32": 60.0, "m-sam-m8": 40.0}
    recs = [{"label": "sgd-fit", "seed": s, "metrics": {"test_acc": 0.5}} for s in range(3)]
    for s, jitter in enumerate((0.0, 1.0, -1.0)):
        for arm, v in tr_v.items():
            curves = {
                "trace_V": [120.0] + [v + jitter] * 5,
                "test_acc": [0.5 + (0.1 if arm == "m-sam-m8" else 0)] * 5,
            }
            recs.append({"label": arm, "seed": s, "tags": {"arm": arm}, "metrics": {}, "curves": curves})
    rec = RecordedFile(
        Path("controls-escape-paper.json"),
        {"experiment": "controls-escape", "mode": "paper", "records": recs},
    )
    rows = cr.escape_rows(rec)
    assert len(rows) == 5 and {r.claim for r in rows} == {"C6"}
    assert [r.status for r in rows] == ["reproduced", "reproduced", "reproduced", "consistent", "reproduced"]
    assert cr.escape_rows(None) == []
