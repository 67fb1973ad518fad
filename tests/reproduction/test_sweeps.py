"""Summaries of chapter 4's sweep, and its recorded result checked against the catalogue."""

from __future__ import annotations

import json

import pytest

from sam_tutorial.engine.recorded import find_result, load_recorded
from sam_tutorial.reproduction.sweeps import best_per_m, summarise
from sam_tutorial.stats import mean_std


def test_summarise_and_best_per_m():
    recs = [dict(m=8, rho=0.1, seed=s, test_acc=a) for s, a in enumerate((0.6, 0.7))]
    recs += [dict(m=8, rho=0.2, seed=0, test_acc=0.5), dict(m=None, rho=0.0, seed=0, test_acc=0.4)]
    table = summarise(recs, ["test_acc"])
    assert table[(8, 0.1)]["n"] == 2
    assert table[(8, 0.1)]["test_acc"] == pytest.approx(mean_std([0.6, 0.7]))
    assert best_per_m(table) == {8: 0.1, None: 0.0}


def test_the_recorded_sweep_is_checked_against_the_catalogue(tmp_path):
    """Chapter 4 loads results/m-sharpness-cnn.json through engine.recorded: a matching file loads, a
    changed configuration hash or a run the catalogue lacks is ignored with the reason."""
    data = json.loads(find_result("m-sharpness-cnn.json").read_text())
    assert load_recorded(find_result("m-sharpness-cnn.json")).loaded[0].data["records"] == data["records"]
    stale = json.loads(json.dumps(data))
    stale["records"][0]["config_hash"] = "xyz"
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    unknown = json.loads(json.dumps(data))
    unknown["records"][0]["label"] = "adam"
    (tmp_path / "unknown.json").write_text(json.dumps(unknown))
    found = load_recorded(tmp_path)
    reasons = dict((path.name, why) for path, why in found.ignored)
    assert found.loaded == [] and "recorded for configuration 'xyz'" in reasons["stale.json"]
    assert "adam" in reasons["unknown.json"]
