"""Tests for sam_tutorial.engine.experiments and sam_tutorial.engine.runs: configurations, cache keys, the
cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam_tutorial.engine import runs
from sam_tutorial.engine.catalog.paper import TABLE1
from sam_tutorial.engine.data import DATASETS
from sam_tutorial.engine.experiments import (
    EXPERIMENTS,
    get_experiment,
    list_experiments,
    load_results,
    run_experiment,
)
from sam_tutorial.engine.models import MODELS, build_model
from sam_tutorial.engine.runs import run_hash
from sam_tutorial.engine.storage import load_checkpoint
from sam_tutorial.engine.train_config import TrainConfig
from tests.engine.helpers import mnist1d_root, write_fake_cifar

MODES = ("quick", "standard", "paper")
SHAPES = {"mnist1d": (40,), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}
CLASSES = {"mnist1d": 10, "cifar10": 10, "cifar100": 100}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mnist1d_root(tmp_path_factory)


# ----------------------------------------------------------------------------- the catalogue
def test_every_configuration_builds(data_root: Path) -> None:
    hashes = set()
    for exp in EXPERIMENTS.values():
        assert set(exp.seeds) == set(MODES), exp.name
        for mode in MODES:
            specs = exp.runs(mode)
            by_label = {s.label: s for s in specs}
            assert specs, (exp.name, mode)
            for spec in specs:
                assert spec.data.name in DATASETS and spec.model in MODELS
                with torch.device("meta"):
                    build_model(spec.model, num_classes=CLASSES[spec.data.name],
                                input_shape=SHAPES[spec.data.name], **dict(spec.model_options))
                for seed in exp.seeds[mode]:
                    hashes.add(run_hash(exp, mode, spec, seed, by_label))
    total = sum(len(e.runs(m)) * len(e.seeds[m]) for e in EXPERIMENTS.values() for m in MODES)
    assert len(hashes) == total  # every (experiment, mode, run, seed) has its own cache key


def test_chapter_and_paper_experiments_exist() -> None:
    names = [n for n, _ in list_experiments()]
    for name in ("smoke", "m-sweep", "escape", "rw-compare", "rw-study-compare", "rw-study-lambda",
                 "rw-study-noise", "table6-resnet18-cifar10", "table4-noise20", "table4-noise80"):
        assert name in names
    assert sum(n.startswith("table1-") for n in names) == 6
    with pytest.raises(ValueError, match="valid names: .*smoke"):
        get_experiment("table7")


@pytest.mark.parametrize(("model", "dataset"), list(TABLE1))
def test_table1_paper_configuration(model: str, dataset: str) -> None:
    exp = get_experiment(f"table1-{model}-{dataset}")
    assert "UNCONFIRMED" in exp.notes and exp.seeds["paper"] == (0, 1, 2)
    specs = {s.label: s for s in exp.runs("paper")}
    assert list(specs) == ["sgd", "sam", "rw-sam"]
    rho = 0.05 if dataset == "cifar10" else 0.1
    for spec in specs.values():
        t = spec.train
        assert (t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay, t.schedule, t.augment) == (
            200, 128, 0.1, 0.9, 5e-4, "cosine", True)
        assert spec.model == model and spec.data.name == dataset and spec.data.n_train is None
    assert specs["sgd"].train.rho == 0 and specs["sam"].train.rho == rho == specs["rw-sam"].train.rho
    quick = exp.runs("quick")[0]
    assert quick.data.n_train == 512 and quick.train.epochs == 1
    assert exp.runs("standard")[0].train.epochs == 10 and exp.runs("standard")[0].model == model


def test_table4_and_table6_configurations() -> None:
    for rate in (20, 40, 60, 80):
        specs = get_experiment(f"table4-noise{rate}").runs("paper")
        assert [s.data.label_noise for s in specs] == [rate / 100] * 3
        assert [s.train.optimizer for s in specs] == ["sgd", "sam", "rw-sam"]
    t6 = get_experiment("table6-resnet18-cifar10")
    assert all(s.train.metrics == ("trace_V",) for s in t6.runs("paper"))
    assert "UNCONFIRMED" in t6.notes


def test_m_sweep_holds_rho_and_varies_m() -> None:
    specs = get_experiment("m-sweep").runs("standard")
    assert [s.tags["m"] for s in specs] == [None, 128, 32, 16, 8]
    assert {s.train.rho for s in specs[1:]} == {0.05} and specs[1].train.optimizer == "sam"
    assert all(s.train.batch_size == 128 for s in specs)


def test_cache_key_depends_on_mode_seed_and_experiment() -> None:
    smoke, rw = get_experiment("smoke"), get_experiment("rw-compare")
    spec = smoke.runs("standard")[0]
    by = {spec.label: spec}
    keys = {run_hash(smoke, "standard", spec, 0, by), run_hash(smoke, "paper", spec, 0, by),
            run_hash(smoke, "standard", spec, 1, by), run_hash(rw, "standard", spec, 0, by)}
    assert len(keys) == 4


def _pinned_run() -> tuple[runs.Experiment, runs.RunSpec]:
    spec = runs.RunSpec("m-sam-m4", runs.DataSpec("mnist1d", n_train=64), "mlp",
                        TrainConfig(optimizer="m-sam", rho=0.05, m=4, epochs=2, batch_size=16),
                        model_options={"hidden": (8,)})
    return runs.Experiment("pinned", "a hand-made run", lambda mode: [spec], {"quick": (0,)}), spec


def test_cache_key_is_a_pure_function_of_the_run_and_is_pinned() -> None:
    """Equal inputs built twice give the same key, and the key of a fixed run is pinned: a change of
    the hashing (or of TrainConfig.to_dict) would orphan every cached and recorded result."""
    (exp, spec), (exp2, spec2) = _pinned_run(), _pinned_run()
    key = run_hash(exp, "quick", spec, 0, {spec.label: spec})
    assert key == run_hash(exp2, "quick", spec2, 0, {spec2.label: spec2})
    assert key == PINNED_KEY
    other = runs.RunSpec(spec.label, spec.data, spec.model, TrainConfig(optimizer="m-sam", rho=0.05, m=8,
                         epochs=2, batch_size=16), model_options=spec.model_options)
    assert run_hash(exp, "quick", other, 0, {other.label: other}) != key


PINNED_KEY = "20877ade7dba"


def test_bad_arguments_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be one of quick, standard, paper"):
        run_experiment("smoke", mode="fast", out=tmp_path)
    with pytest.raises(ValueError, match="not runs of 'smoke'; its runs: sgd, sam, m-sam-m16, rw-sam"):
        run_experiment("smoke", mode="quick", out=tmp_path, labels=["adam"])


# ----------------------------------------------------------------------------- running and the cache
def test_smoke_runs_then_is_served_from_the_cache(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = run_experiment("smoke", mode="quick", seeds=[0, 1], out=tmp_path, device="cpu", data_root=data_root)
    assert [(r["label"], r["seed"]) for r in res.records] == [
        (label, s) for label in ("sgd", "sam", "m-sam-m16", "rw-sam") for s in (0, 1)]
    for r in res.records:
        stem = tmp_path / "smoke" / "quick" / f"{r['label']}-seed{r['seed']}-{r['config_hash']}"
        assert stem.with_suffix(".json").exists() and stem.with_suffix(".pt").exists()
        assert r["mode"] == "quick" and r["provenance"]["resumed_from_epoch"] == 0
        assert r["versions"]["torch"] == torch.__version__
        assert r["config"]["train"]["epochs"] == 2

    monkeypatch.setattr(runs, "fit", lambda *a, **k: pytest.fail("cached results must not retrain"))
    again = run_experiment("smoke", mode="quick", seeds=[0, 1], out=tmp_path, device="cpu",
                           data_root=data_root)
    assert again.records == res.records
    loaded = load_results("smoke", mode="quick", seeds=[0, 1, 2], out=tmp_path)
    assert loaded.records == res.records and loaded.missing == [(label, 2) for label in res.labels()]
    assert load_results("smoke", mode="standard", out=tmp_path).records == []  # the mode is in the key

    rows = {row["label"]: row for row in res.summary()}
    sam = [r["metrics"]["test_acc"] for r in res.select("sam")]
    assert rows["sam"]["test_acc"] == pytest.approx(sum(sam) / 2) and rows["sam"]["seeds"] == 2
    assert rows["sam"]["test_acc_std"] == pytest.approx(abs(sam[0] - sam[1]) / 2**0.5)  # sample std
    assert res.curves("test_acc")["rw-sam"].shape == (2, 2)
    table = res.table()
    assert all(label in table for label in ("sgd", "m-sam-m16")) and "test_acc" in table


def test_escape_phase_two_starts_from_the_init_run(tmp_path: Path, data_root: Path) -> None:
    from sam_tutorial.engine.data import load_dataset
    from sam_tutorial.engine.train_config import cross_entropy
    from sam_tutorial.sgn.variance import trace_V

    res = run_experiment("escape", mode="quick", out=tmp_path, device="cpu", data_root=data_root)
    init = res.select("sgd-init")[0]
    starts = {label: vals[0, 0] for label, (epochs, vals) in res.metric_curves("trace_V").items()}
    assert set(starts) == {"sgd", "n-sam", "sam", "m-sam-m32"}
    assert len(set(starts.values())) == 1  # every phase-2 run starts at the same weights

    ckpt = tmp_path / "escape" / "quick" / f"sgd-init-seed0-{init['config_hash']}.pt"
    model = build_model("mlp", num_classes=10, input_shape=(40,), hidden=(256, 256))
    model.load_state_dict(load_checkpoint(ckpt, init["config_hash"])["model"])
    x, y = load_dataset("mnist1d", data_root, n_train=1000).train
    assert starts["sgd"] == pytest.approx(float(trace_V(model, cross_entropy, x, y)), rel=1e-5)


def test_paper_configuration_runs_end_to_end_on_fake_cifar(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path / "data", "cifar10", per_file=30)
    res = run_experiment("table1-resnet18-cifar10", mode="quick", out=tmp_path / "runs", device="cpu",
                         data_root=tmp_path / "data")
    assert res.labels() == ["sgd", "sam", "rw-sam"]
    for r in res.records:
        assert r["provenance"]["data"]["n_train"] == 150 and r["config"]["model_options"] == {"width": 8}
        assert 0 <= r["metrics"]["test_acc"] <= 1 and r["metrics"]["skipped"] == 0
        assert r["history"]["train_acc"] == [None]  # eval_train is off for the paper configurations
