"""The m-sweep's probe (engine.probe): its memorisation split, its bad input, and that it regenerates the
recorded metrics of ``results/m-sharpness-cnn.json`` from a retrained catalogue run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sam_tutorial.engine.probe import ProbeSettings, main, probe_metrics, probe_run
from sam_tutorial.engine.recorded import packaged_results

TINY = ProbeSettings(n_samples=256, hutchinson_probes=2, lanczos_steps=4, sharpness_m=8, sharpness_steps=1)


def _quick(tmp_path: Path) -> dict[str, float]:
    return probe_run("m-sharpness-cnn", "sgd", 0, mode="quick", out=tmp_path, settings=TINY)


def test_train_accuracy_splits_into_memorised_and_clean_fit(tmp_path: Path) -> None:
    from sam_tutorial.engine.data import load_dataset

    got = _quick(tmp_path)
    data = load_dataset("mnist1d", None, 0.3, 0, n_train=256, n_test=256)
    n_bad = int((data.train[1] != data.clean_train_targets).sum())
    assert 0 < n_bad < 256
    # train_acc (noisy labels) is the sample-weighted mean of the two fractions (their definitions)
    split = (n_bad * got["memorised"] + (256 - n_bad) * got["clean_fit"]) / 256
    assert split == pytest.approx(got["train_acc"], abs=1e-6)
    assert all(math.isfinite(v) for v in got.values())
    assert got["lambda_max"] > 0 and got["m_sharpness"] >= 0


def test_bad_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="no run 'nope'"):
        probe_run("m-sharpness-cnn", "nope", 0, mode="quick", out=tmp_path)
    assert main(["m-sharpness-cnn", "nope", "0", "--mode", "quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    net = torch.nn.Linear(40, 10)
    from sam_tutorial.engine.data import load_dataset

    data = load_dataset("mnist1d", None, 0.3, 0, n_train=16, n_test=16)
    with pytest.raises(ValueError, match="n_samples"):
        probe_metrics(net, data, ProbeSettings(n_samples=17))


@pytest.mark.slow
def test_the_probe_regenerates_the_recorded_sweep_metrics(tmp_path: Path) -> None:
    # SGD seed 2 is the cheapest recorded run (~15 s on a free core) that has every metric, lambda_max and
    # m_sharpness included (the first probes did not record them).
    records = json.loads((packaged_results() / "m-sharpness-cnn.json").read_text())["records"]
    recorded = next(r["metrics"] for r in records
                    if r["label"] == "sgd" and r["seed"] == 2)
    got = probe_run("m-sharpness-cnn", "sgd", 2, out=tmp_path)
    assert set(got) == set(recorded)
    # Deterministic given the weights: accuracies (a flip of one of 1000 test / 2000 training argmaxes under
    # rounding is allowed), the loss and tr V (rounding of a different thread count or BLAS).
    for key, tol in {"test_acc": 1e-3, "train_acc": 5e-4, "memorised": 2e-3, "clean_fit": 1e-3}.items():
        assert got[key] == pytest.approx(recorded[key], abs=tol), key
    for key in ("test_loss", "trace_V"):
        assert got[key] == pytest.approx(recorded[key], rel=1e-4), key
    # The random estimates use the recorded probes' seed (0), so they are the same draws: Hutchinson's
    # 20-probe estimate and the Lanczos Ritz value agree to rounding, not merely within their spread
    # (Hutchinson's s.e. over 20 probes is several percent of tr H).
    assert got["trace_H"] == pytest.approx(recorded["trace_H"], rel=1e-3)
    assert got["lambda_max"] == pytest.approx(recorded["lambda_max"], rel=1e-3)
    assert got["m_sharpness"] == pytest.approx(recorded["m_sharpness"], rel=1e-3)
