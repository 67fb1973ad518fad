"""Tests for sam_tutorial.engine.catalog.controls: the run lists say what the module promises, the reading
of the records follows the book's protocol, and a quick run records and loads with its curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sam_tutorial.engine.catalog import controls as C
from sam_tutorial.engine.experiments import get_experiment, run_experiment
from sam_tutorial.engine.recorded import load_recorded
from sam_tutorial.stats import decide, t_interval


def test_noise_study_covers_every_level_arm_and_setting_with_a_validation_split() -> None:
    runs = get_experiment("controls-noise").runs("paper")
    cells = {(s.tags["noise"], s.tags["arm"], s.tags["rho"], s.tags["lam"]) for s in runs}
    expected = {(p, arm, rho, lam) for p in C.NOISE for arm in C.ARMS for rho in C.GRID[arm]
                for lam in (C.RW_LAMS if arm.startswith("rw-sam") else (None,))}
    assert cells == expected and len(runs) == len(expected)
    for s in runs:
        t = s.train
        assert t.val_fraction == C.VAL_FRACTION and t.epochs == C.EPOCHS and s.data.n_train == C.N_TRAIN
        assert s.data.label_noise == s.tags["noise"] and s.model_options["channels"] == C.CHANNELS
        if t.optimizer == "m-sam":
            assert t.batch_size % t.m == 0
        if t.optimizer == "rw-sam":
            assert t.options["weighted_descent"] is (s.tags["arm"] == "rw-sam-weighted")
    # the held-out split leaves whole batches: no training sample is dropped
    kept = C.N_TRAIN - round(C.VAL_FRACTION * C.N_TRAIN)
    assert kept % runs[0].train.batch_size == 0


def test_m_sam_grids_are_sams_scaled_by_the_fourth_root_of_m_over_b() -> None:
    for m in (32, 8):
        ratios = np.array(C.GRID[f"m-sam-m{m}"]) / np.array(C.GRID["sam"])
        assert np.allclose(ratios, (m / 128) ** 0.25, rtol=1e-3)


def test_escape_continues_every_variant_from_the_sgd_fit_with_one_radius() -> None:
    runs = get_experiment("controls-escape").runs("paper")
    fit, rest = runs[0], runs[1:]
    assert fit.label == "sgd-fit" and fit.train.optimizer == "sgd"
    assert {s.label for s in rest} == {"sgd", "n-sam", "sam", "m-sam-m32", "m-sam-m8", "rw-sam-uniform",
                                       "rw-sam-weighted"}
    for s in rest:
        assert s.init_from == "sgd-fit" and s.train.schedule == "constant"
        assert s.train.metric_epochs == tuple(range(C.ESCAPE_EPOCHS + 1))
        assert s.train.rho in (0.0, C.ESCAPE_RHO)
    nsam = next(s for s in rest if s.label == "n-sam")
    assert nsam.train.nsam_samples is None  # the whole training set's gradient, no stand-in subset


def _rec(arm: str, noise: float, rho: float, seed: int, val: float, test: float,
         lam: float | None = None) -> dict:
    return {"label": C.noise_label(arm, noise, rho, lam), "seed": seed,
            "tags": {"arm": arm, "noise": noise, "rho": rho, "lam": lam},
            "metrics": {"val_acc": val, "test_acc": test, "train_acc": 1.0, "train_acc_clean": 0.9}}


def test_choose_takes_the_best_mean_validation_accuracy_and_flags_an_edge() -> None:
    recs = [_rec("sam", 0.4, 0.1, s, v, t) for s, v, t in ((0, 0.30, 0.5), (1, 0.20, 0.6))]
    recs += [_rec("sam", 0.4, 0.3, s, v, t) for s, v, t in ((0, 0.26, 0.4), (1, 0.26, 0.45))]
    recs += [_rec("sgd", 0.4, 0.0, s, 0.1, t) for s, t in ((0, 0.42), (1, 0.40))]
    # a third seed of the radius 0.3 only: the choice still compares the two radii on seeds 0 and 1
    recs.append(_rec("sam", 0.4, 0.3, 2, 0.0, 0.5))
    sam = C.choose(recs, "sam", 0.4)
    assert sam.rho == 0.3 and sam.val_acc == pytest.approx(0.26) and sam.edge  # 0.26 > mean(0.30, 0.20)
    assert sam.test_acc == {0: 0.4, 1: 0.45, 2: 0.5}  # the chosen radius's test accuracy, every seed
    sgd = C.choose(recs, "sgd", 0.4)
    assert not sgd.edge
    d = C.compare(sam, sgd)
    ref = decide([0.4 - 0.42, 0.45 - 0.40], C.MIN_EFFECT)  # paired on the seeds both arms have
    assert d.verdict == ref.verdict and d.interval.mean == pytest.approx(ref.interval.mean)
    with pytest.raises(ValueError, match="no record of arm"):
        C.choose(recs, "m-sam-m8", 0.4)


def test_escape_band_is_the_mean_and_standard_error_over_seeds(tmp_path: Path) -> None:
    def rec(label: str, seed: int, tv: list[float], acc: list[float]) -> dict:
        return {"label": label, "seed": seed, "metrics": {"test_acc": 0.3 + seed / 100},
                "curves": {"trace_V": tv, "test_acc": acc}}

    recs = [rec("sgd-fit", s, [], []) for s in (0, 1, 2)]
    recs += [rec("sam", s, [10.0 + s, 8.0 - s], [0.5 + s / 10]) for s in (0, 1, 2)]
    recs += [rec("sgd", s, [10.0 + s, 9.0 + s], [0.4]) for s in (0, 1, 2)]
    mean, se = C.escape_band(recs, "sam", "trace_V")
    assert mean == pytest.approx([11.0, 7.0])
    assert se[1] == pytest.approx(np.std([8, 7, 6], ddof=1) / math.sqrt(3))
    acc, _ = C.escape_band(recs, "sam", "test_acc")  # epoch 0 is the SGD fit the run starts from
    assert acc == pytest.approx([0.31, 0.6])
    d = C.escape_decision(recs, "sam", "trace_V", 1.0, last=1)
    assert d.interval.mean == pytest.approx(t_interval([-1.0, -3.0, -5.0]).mean)
    # a run that diverged is named and left out of the band and of the pairs
    recs.append(rec("m-sam-m8", 0, [10.0, float("nan")], [0.1]))
    recs += [rec("m-sam-m8", s, [10.0 + s, 5.0], [0.5]) for s in (1, 2)]
    assert C.diverged(recs, "m-sam-m8") == [0] and C.diverged(recs, "sam") == []
    assert C.escape_band(recs, "m-sam-m8", "trace_V")[0] == pytest.approx([11.5, 5.0])
    assert C.escape_decision(recs, "m-sam-m8", "trace_V", 1.0, last=1).interval.n == 2


def test_a_quick_escape_run_is_recorded_with_its_curves_and_loads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SAM_TUTORIAL_MODE", "quick")
    # record() reads paper mode; a quick run checks the writer through the same path
    res = run_experiment("controls-escape", mode="quick", out=tmp_path / "runs", progress=False)
    assert not res.missing
    from sam_tutorial.engine.record import records_from_results, write_recorded

    recs = records_from_results(res.records)
    for r, full in zip(recs, res.records):
        r["curves"] = C.curves_of(full)
    write_recorded(tmp_path / "esc.json", "controls-escape", "quick", recs, command="test", device="cpu",
                   wall_seconds=0.0)
    loaded = load_recorded(tmp_path / "esc.json")
    assert loaded.loaded, loaded.report()
    rows = loaded.loaded[0].records
    sam = next(r for r in rows if r["label"] == "sam")
    assert len(sam["curves"]["trace_V"]) == len(sam["curves"]["test_acc"]) + 1 == 3
    mean, _ = C.escape_band(rows, "sam", "test_acc")
    fit = next(r for r in rows if r["label"] == "sgd-fit")
    assert mean[0] == pytest.approx(fit["metrics"]["test_acc"]) and mean[-1] == pytest.approx(
        sam["metrics"]["test_acc"])


def test_record_refuses_other_experiments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="controls-noise or controls-escape"):
        C.record("m-sharpness-cnn", tmp_path, tmp_path / "x.json", device="cpu", command="")
