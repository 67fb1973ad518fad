"""The deciding experiments (engine/catalog/deciding.py): the paper's settings, the arms each question
needs, λ on a scale-free footing, and one quick run of the pipeline on CIFAR-shaped files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sam_tutorial.engine.catalog import deciding
from sam_tutorial.engine.experiments import get_experiment, run_experiment
from sam_tutorial.optim import RWSAM, gibbs_weights
from tests.engine.helpers import write_fake_cifar


def test_every_deciding_experiment_builds_in_every_mode_with_a_question() -> None:
    assert set(deciding.QUESTIONS) == set(deciding.DECIDING)
    for name in deciding.DECIDING:
        exp = get_experiment(name)
        for mode in ("quick", "standard", "paper"):
            specs = exp.runs(mode)
            assert specs, (name, mode)
        assert "UNCONFIRMED" in exp.notes and exp.seeds["paper"] == (0, 1, 2)


def test_paper_mode_uses_the_paper_models_and_settings() -> None:
    for name in deciding.DECIDING:
        for spec in get_experiment(name).runs("paper"):
            assert spec.model == spec.tags["model"] in ("resnet18", "wrn28-10")
            assert spec.data.name == spec.tags["dataset"] and spec.data.n_train is None
            assert spec.train.batch_size == 128
            if spec.init_from is None and "phase" not in spec.tags:
                assert spec.train.epochs == 200 and spec.train.augment
                assert spec.train.rho == (0.0 if spec.train.optimizer == "sgd" else
                                          0.05 if spec.data.name == "cifar10" else 0.1)


def test_the_arms_each_question_needs() -> None:
    msweep = {s.label: s for s in get_experiment("msweep-wrn28-10-cifar100").runs("paper")}
    assert sorted(s.train.m for s in msweep.values() if s.train.optimizer == "m-sam") == [8, 16, 32, 64]
    assert {"sgd", "sam", "n-sam"} <= set(msweep)
    rw = {s.label: s for s in get_experiment("rwsam-resnet18-cifar10").runs("paper")}
    readings = {s.train.options.get("weighted_descent") for s in rw.values()
                if "standardize" in s.train.options}
    assert readings == {False, True} and rw["m-sam-m64"].train.m == 64
    noise = get_experiment("noise-resnet18-cifar10").runs("paper")
    assert sorted({s.data.label_noise for s in noise}) == [0.2, 0.4, 0.6, 0.8]
    assert all(s.train.eval_train for s in noise)  # memorisation shows in the training accuracy
    escape = get_experiment("escape-resnet18-cifar10").runs("paper")
    assert escape[0].label == "sgd-bad" and not escape[0].train.augment
    assert all(s.init_from == "sgd-bad" and s.train.schedule == "constant" for s in escape[1:])
    assert {s.train.m for s in escape if s.train.optimizer == "m-sam"} == set(deciding.M_VALUES)


def test_lambda_aims_at_an_effective_batch_for_gaussian_scores() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200_000, generator=g, dtype=torch.float64)
    for target in (112, 64, 16):
        lam = deciding.lam_for_effective_batch(128, target)
        p = gibbs_weights(z, lam)
        # effective fraction 1 / (n sum p^2) against the closed form exp(-lam^2)
        assert float(1 / (p.square().sum() * len(z))) == pytest.approx(target / 128, rel=0.03)
    with pytest.raises(ValueError, match="m_eff"):
        deciding.lam_for_effective_batch(128, 0)


def test_standardised_scores_put_lambda_in_units_of_their_spread() -> None:
    model = torch.nn.Linear(3, 2)
    opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, lam=0.8, standardize=True)
    scores = torch.tensor([3.0, 50.0, 7.0, 120.0, 0.5])
    weights = opt._weights_from_scores(scores)
    # a softmax ignores a shift, so standardising is lambda / std on the raw scores
    expected = gibbs_weights(scores, 0.8 / float(scores.std(correction=0)))
    torch.testing.assert_close(weights, expected)
    assert math.isclose(float(weights.sum()), 1.0, rel_tol=1e-6)


def test_rwsam_quick_runs_end_to_end_on_cifar_shaped_files(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path / "data", per_file=32)
    result = run_experiment("rwsam-resnet18-cifar10", mode="quick", out=tmp_path / "runs", device="cpu",
                            data_root=tmp_path / "data", labels=["rw-sam-weighted-meff64"])
    (record,) = result.records
    assert record["config"]["train"]["options"] == {"weighted_descent": True, "standardize": True}
    assert record["metrics"]["trace_V"] is not None and math.isfinite(record["metrics"]["test_loss"])
    # fit's per-step metrics: the weights' effective batch per epoch, between 1 and the batch
    (effective,) = record["history"]["step"]["effective_batch"]
    assert 1.0 <= effective <= 128.0


def test_escape_noise_and_nsam_quick_runs_on_cifar_shaped_files(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path / "data", per_file=32)
    kw = dict(mode="quick", out=tmp_path / "runs", device="cpu", data_root=tmp_path / "data")
    escape = run_experiment("escape-resnet18-cifar10", labels=["m-sam-m8"], **kw)  # type: ignore[arg-type]
    (child,) = escape.records
    assert child["config"]["init_from"] == "sgd-bad"
    assert child["history"]["metrics"]["epoch"] == [0, 1]  # tr V at the switch and after
    noise = run_experiment("noise-resnet18-cifar10", labels=["rw-sam-uniform-meff64-noise80"], **kw)  # type: ignore[arg-type]
    assert "train_acc_clean" in noise.records[0]["history"]
    step = noise.records[0]["history"]["step"]
    assert 0.0 <= step["mislabelled_weight"][0] <= 1.0  # the weight the perturbation puts on wrong labels
    nsam = run_experiment("msweep-resnet18-cifar10", labels=["n-sam"], **kw)  # type: ignore[arg-type]
    assert nsam.records[0]["config"]["train"]["nsam_samples"] == 256
