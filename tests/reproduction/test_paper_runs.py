"""Chapter 6's paper tables, the catalogue's assumed settings, and the cost extrapolation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sam_tutorial.engine.experiments import get_experiment
from sam_tutorial.published import TABLE1, TABLE4
from sam_tutorial.reproduction import paper_runs as pr


def test_tables_come_from_the_catalogue() -> None:
    tables = pr.paper_tables()
    assert len(tables["Table 1"]) == len(TABLE1) and len(tables["Table 4"]) == len(TABLE4)
    assert {r["experiment"] for r in tables["Table 1"] + tables["Table 4"]} <= set(pr.paper_experiments())
    assert tables["Table 6"][0] == {"optimizer": "SGD", "tr V": 572.39, "std": 24.15}


def test_assumed_settings_are_the_catalogue_values() -> None:
    settings = pr.assumed_settings()
    spec = next(
        s for s in get_experiment("table1-resnet18-cifar100").runs("paper") if s.train.optimizer == "rw-sam"
    )
    assert str(spec.train.epochs) in settings["epochs"] and str(spec.train.lam) in settings["lam"]
    assert f"{spec.train.rho} (cifar100)" in settings["rho"]
    assert settings["RW-SAM weighted_descent"] == {"False"} and settings["label_noise_kind"] == {"other"}


def _timing() -> dict:
    steps = {"4": {"sgd": 1.0 + 4 * 0.5, "sam": 2.0}, "8": {"sgd": 1.0 + 8 * 0.5, "sam": 2.0}}
    return {
        "format": "sam_tutorial.timing/1",
        "batches": [4, 8],
        "models": {"resnet18": {"seconds_per_step": steps}},
        "provenance": {"command": "python tools/time_paper_models.py", "commit": "abc", "device": "cpu: x",
                       "package": {"sam_tutorial": "0.1.0", "torch": "2"}, "date": "2026-12-01",
                       "wall_seconds": 1.0},
    }


def test_step_fit_and_epoch_seconds() -> None:
    a, b = pr.step_fit(_timing(), "resnet18", "sgd")
    assert (a, b) == pytest.approx((1.0, 0.5))
    assert pr.epoch_seconds(_timing(), "resnet18", "sgd") == pytest.approx(
        (1.0 + 0.5 * 128) * (50_000 // 128)
    )
    assert pr.step_fit(_timing(), "resnet18", "sam") == pytest.approx((0.0, 2.0 / 8))  # flat: per image of 8


def test_load_timings_and_table_cost(tmp_path: Path) -> None:
    (tmp_path / "paper-timing-cpu.json").write_text(json.dumps(_timing()))
    assert set(pr.load_timings(tmp_path)) == {"cpu"}
    hours = pr.table_cost(lambda model, opt: 36.0, ["table1-resnet18-cifar10", "table4-noise20"])
    exp = get_experiment("table1-resnet18-cifar10")
    runs = len(exp.runs("paper")) * len(exp.seeds["paper"])
    assert hours["table1-resnet18-cifar10"] == pytest.approx(runs * 200 * 36.0 / 3600)
