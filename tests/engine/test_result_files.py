"""Every file under results/ has one format, a provenance and valid values, and is read by one reader
(sam_tutorial.engine.recorded): a bad file is skipped and named while the others load; lookups stay inside
the results folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sam_tutorial.engine.record import write_recorded, write_result_file
from sam_tutorial.engine.recorded import find_result, load_recorded, packaged_results, read_result
from sam_tutorial.engine.result_formats import BENCH_FORMAT, FORMATS, RECORDED_FORMAT, problems
from sam_tutorial.engine.storage import ResultFileError
from tests.engine.test_recorded import EXP, MODE, _records, _write


def test_every_shipped_result_file_is_valid_current_and_tagged() -> None:
    files = sorted(packaged_results().glob("*.json"))
    assert files
    for path in files:
        data = read_result(path)  # raises on an unknown format, invalid content or a stale hash
        assert data["format"] in FORMATS
        prov = data["provenance"]
        assert prov["command"] and prov["date"] and prov["device"] and prov["package"]["torch"], path.name


@pytest.mark.parametrize("name", ["", " ", "..", ".", "../x.json", "a/b.json", "/etc/passwd", "..\\x"])
def test_lookups_stay_inside_the_results_folder(name: str) -> None:
    with pytest.raises(ValueError, match="inside the results folder"):
        find_result(name)


def _bad(records: list[dict], **change: object) -> list[dict]:
    out = [dict(r) for r in records]
    out[0] = {**out[0], **change}
    return out


@pytest.mark.parametrize(("change", "message"), [
    ({"metrics": {"test_acc": 96.0}}, "accuracy outside"),
    ({"metrics": {"test_acc": math.nan}}, "not a finite number"),
    ({"metrics": {"test_acc": "0.9"}}, "not a finite number"),
    ({"seed": "0"}, "seed"),
    ({"seed": True}, "seed"),
    ({"label": ""}, "label"),
    ({"seconds_per_epoch": -1.0}, "seconds_per_epoch"),
    ({"history": {"effective_batch": [1.0, math.inf]}}, "history.effective_batch.1"),
])
def test_invalid_records_are_named(change: dict, message: str) -> None:
    data = {"format": RECORDED_FORMAT, "experiment": EXP, "mode": MODE, "records": _bad(_records(), **change),
            "provenance": {"command": "c", "commit": "x", "package": {"sam_tutorial": "0", "torch": "2"},
                           "device": "cpu", "date": "d", "wall_seconds": 1.0}}
    found = problems(data)
    assert any(message in p and "records[0]" in p for p in found), found


def test_a_duplicate_run_and_seed_is_rejected(tmp_path: Path) -> None:
    records = _records()
    with pytest.raises(ValueError, match="appears twice"):
        _write(tmp_path / "dup.json", [*records, dict(records[0])])
    assert not (tmp_path / "dup.json").exists()


def test_a_bad_file_is_skipped_and_named_while_the_rest_load(tmp_path: Path) -> None:
    _write(tmp_path / "good.json", _records())
    bad = _write(tmp_path / "bad.json", _records())
    bad["records"][1]["metrics"]["test_acc"] = 95.0  # percent where fractions belong
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.warns(UserWarning) as caught:
        found = load_recorded(tmp_path)
    assert [f.path.name for f in found.loaded] == ["good.json"]
    named = " ".join(str(w.message) for w in caught)
    assert "bad.json" in named and "broken.json" in named and "accuracy outside" in named
    with pytest.raises(ResultFileError, match="bad.json"):
        read_result(tmp_path / "bad.json")


def test_the_shared_writer_tags_checks_and_writes_atomically(tmp_path: Path) -> None:
    body = {"device": "cpu: x", "model": "mlp", "times": {"sgd": 0.1, "sam": 0.2}, "ratios": {"sam/sgd": 2.0}}
    data = write_result_file(tmp_path / "bench-x.json", BENCH_FORMAT, body, command="sam-tutorial bench",
                             device="cpu: x", wall_seconds=3.0, commit="abc")
    assert read_result(tmp_path / "bench-x.json") == data
    assert data["format"] == BENCH_FORMAT and data["provenance"]["commit"] == "abc"
    with pytest.raises(ValueError, match="times.sam"):
        write_result_file(tmp_path / "bench-y.json", BENCH_FORMAT, {**body, "times": {"sam": 0.0}},
                          command="c", device="cpu", wall_seconds=None)
    assert not (tmp_path / "bench-y.json").exists()


def test_a_recorded_file_keeps_its_per_epoch_step_metrics(tmp_path: Path) -> None:
    records = _records()
    records[0]["history"] = {"test_acc": [0.5, 0.6], "effective_batch": [30.0, 40.0]}
    write_recorded(tmp_path / "r.json", EXP, MODE, records, command="c", device="cpu", wall_seconds=1.0)
    assert read_result(tmp_path / "r.json")["records"][0]["history"]["effective_batch"] == [30.0, 40.0]
