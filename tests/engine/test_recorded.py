"""Recorded results (sam_tutorial.engine.recorded): a file whose configuration hashes match the catalogue is
loaded; one whose hash is stale (the catalogue changed, or the file was edited) is ignored with the reason."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sam_tutorial.engine import experiments
from sam_tutorial.engine.provenance import versions
from sam_tutorial.engine.record import main, records_from_results, write_recorded
from sam_tutorial.engine.recorded import RECORDED_FORMAT, check_recorded, expected_hash, load_recorded

EXP, MODE = "table1-resnet18-cifar10", "paper"


def _records(world_size: int = 1) -> list[dict]:
    out = []
    for label, acc in (("sgd", 0.95), ("sam", 0.96), ("rw-sam", 0.962)):
        for seed in (0, 1):
            rec = {
                "label": label,
                "seed": seed,
                "config_hash": expected_hash(EXP, MODE, label, seed, world_size),
                "tags": {},
                "metrics": {"test_acc": acc + 0.001 * seed},
                "seconds_per_epoch": 12.0,
            }
            if world_size > 1:
                rec["distributed"] = {"world_size": world_size, "scope": "local"}
            out.append(rec)
    return out


def _write(path: Path, records: list[dict]) -> dict:
    return write_recorded(
        path,
        EXP,
        MODE,
        records,
        command="python -m sam_tutorial run " + EXP,
        device="cuda: test",
        wall_seconds=3.5,
        commit="abc123",
    )


def test_a_matching_file_is_loaded_with_its_provenance(tmp_path: Path) -> None:
    data = _write(tmp_path / f"{EXP}-{MODE}.json", _records())
    assert set(data["provenance"]) >= {"command", "commit", "package", "device", "date", "wall_seconds"}
    assert data["provenance"]["package"]["torch"]
    assert data["provenance"]["package"] == versions()  # the same versions a cached result records
    loaded = load_recorded(tmp_path)
    assert not loaded.ignored and len(loaded.loaded) == 1
    found = loaded.get(EXP, MODE)
    assert found is not None and found.values("sam", "test_acc") == pytest.approx([0.96, 0.961])
    assert "loaded" in loaded.report() and EXP in loaded.report()


def test_a_stale_hash_is_ignored_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / f"{EXP}-{MODE}.json"
    _write(path, _records())
    data = json.loads(path.read_text())
    data["records"][2]["config_hash"] = "0123456789ab"  # recorded under another configuration
    path.write_text(json.dumps(data))
    loaded = load_recorded(tmp_path)
    assert not loaded.loaded and len(loaded.ignored) == 1
    ignored, reason = loaded.ignored[0]
    assert (
        ignored == path and "'sam', seed 0" in reason and "0123456789ab" in reason and "re-record" in reason
    )
    assert "ignored" in loaded.report()


def test_a_changed_catalogue_makes_a_recorded_file_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "r.json", _records())
    exp = experiments.EXPERIMENTS[EXP]

    def build(mode: str):  # the same runs with another learning rate
        return [dataclasses.replace(s, train=dataclasses.replace(s.train, lr=0.05)) for s in exp.build(mode)]

    monkeypatch.setitem(experiments.EXPERIMENTS, EXP, dataclasses.replace(exp, build=build))
    loaded = load_recorded(tmp_path)
    assert not loaded.loaded and "configuration changed" in loaded.ignored[0][1]


def test_writing_refuses_records_of_another_configuration(tmp_path: Path) -> None:
    records = _records()
    records[0]["config_hash"] = "ffffffffffff"
    with pytest.raises(ValueError, match="not written"):
        _write(tmp_path / "r.json", records)
    assert not (tmp_path / "r.json").exists()


def test_torchrun_records_are_checked_with_their_world_size(tmp_path: Path) -> None:
    _write(tmp_path / "r.json", _records(world_size=2))
    assert len(load_recorded(tmp_path).loaded) == 1
    assert expected_hash(EXP, MODE, "sam", 0, 2) != expected_hash(EXP, MODE, "sam", 0)


def test_other_files_and_unknown_runs(tmp_path: Path) -> None:
    (tmp_path / "bench-cpu.json").write_text(json.dumps({"device": "cpu"}))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.warns(UserWarning, match="broken.json"):
        assert load_recorded(tmp_path).loaded == [] and len(load_recorded(tmp_path).ignored) == 1  # broken
    with pytest.warns(UserWarning, match="broken.json"):
        assert len(load_recorded(tmp_path, include_other_formats=True).ignored) == 2
    prov = {"command": "c", "commit": "x", "package": {"sam_tutorial": "0", "torch": "2"}, "device": "cpu",
            "date": "d", "wall_seconds": None}
    base = {"format": RECORDED_FORMAT, "experiment": EXP, "mode": MODE, "provenance": prov}
    rec = {"label": "adam", "seed": 0, "config_hash": "x", "metrics": {}}
    assert "not a run" in str(check_recorded({**base, "records": [rec]}))
    assert "unknown experiment" in str(
        check_recorded({**base, "experiment": "nope", "records": [{**rec, "label": "sgd"}]})
    )
    assert "records: missing or empty" in str(check_recorded({**base, "records": []}))


def test_records_from_results_keeps_what_a_recorded_file_needs() -> None:
    result = {
        "label": "sam",
        "seed": 0,
        "config_hash": "h",
        "tags": {"optimizer": "sam"},
        "metrics": {"test_acc": 0.9},
        "history": {"seconds": [1.0]},
        "timing": {"seconds_per_epoch": 1.5},
        "config": {"distributed": {"world_size": 4, "scope": "local"}},
    }
    (rec,) = records_from_results([result])
    assert rec == {
        "label": "sam",
        "seed": 0,
        "config_hash": "h",
        "tags": {"optimizer": "sam"},
        "metrics": {"test_acc": 0.9},
        "seconds_per_epoch": 1.5,
        "distributed": {"world_size": 4, "scope": "local"},
    }


def test_the_command_line_needs_finished_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([EXP, "--mode", MODE, "--out", str(tmp_path / "runs"), "--to", str(tmp_path / "r.json")])
    assert status == 1 and "not every run is finished" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
