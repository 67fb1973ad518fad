"""Chapter 4's helpers: Kendall's tau, summaries of a sweep, halving times, recorded results."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from sam_tutorial.chapters.msharpness import (
    best_per_m,
    halving_time,
    kendall_tau,
    mean_std,
    summarise,
)
from sam_tutorial.engine.recorded import find_result, load_recorded


def test_kendall_tau_known_values():
    # scipy.stats.kendalltau's documented example (tau-b with ties)
    assert kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0


def test_kendall_tau_without_ties_counts_pairs():
    rng = random.Random(0)
    x = [rng.random() for _ in range(9)]
    y = [rng.random() for _ in range(9)]
    pairs = list(itertools.combinations(range(9), 2))
    brute = sum(1 if (x[i] - x[j]) * (y[i] - y[j]) > 0 else -1 for i, j in pairs) / len(pairs)
    assert kendall_tau(x, y) == pytest.approx(brute)


def test_summarise_and_best_per_m():
    recs = [dict(m=8, rho=0.1, seed=s, test_acc=a) for s, a in enumerate((0.6, 0.7))]
    recs += [dict(m=8, rho=0.2, seed=0, test_acc=0.5), dict(m=None, rho=0.0, seed=0, test_acc=0.4)]
    table = summarise(recs, ["test_acc"])
    assert table[(8, 0.1)]["n"] == 2
    assert table[(8, 0.1)]["test_acc"] == pytest.approx(mean_std([0.6, 0.7]))
    assert best_per_m(table) == {8: 0.1, None: 0.0}


def test_halving_time():
    assert halving_time([0, 2, 4], [10.0, 6.0, 4.0]) == pytest.approx(2 + 2 * (1 / 2))
    assert math.isinf(halving_time([0, 1], [1.0, 0.9]))


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
