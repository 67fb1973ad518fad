"""Bad input and faults (the engine): data files, training configuration, checkpoints, result
files, runs, models, loader, label noise, the distributed launch. Every bad input gets an error that names
the argument (or file) and what was expected, raised before anything changes."""

from __future__ import annotations

import math
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sam_tutorial.engine import distributed
from sam_tutorial.engine.data import apply_label_noise, load_dataset
from sam_tutorial.engine.experiments import get_experiment, load_results, run_experiment
from sam_tutorial.engine.loader import BatchLoader
from sam_tutorial.engine.models import build_model
from sam_tutorial.engine.runs import run_hash, run_path
from sam_tutorial.engine.storage import (
    CheckpointError,
    DataFileError,
    ResultFileError,
    run_lock,
    save_checkpoint,
)
from sam_tutorial.engine.train import fit
from sam_tutorial.engine.train_config import TrainConfig
from tests.engine.helpers import mnist1d_root, toy_dataset, write_fake_cifar

C10 = "cifar-10-batches-py"
C100 = "cifar-100-python"


def _rewrite(path: Path, **changes: Any) -> None:
    """Load a fake CIFAR pickle, change entries, write it back."""
    entry = pickle.loads(path.read_bytes())
    entry.update(changes)
    path.write_bytes(pickle.dumps(entry, protocol=2))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- CIFAR files
def test_cifar_labels_not_matching_images_per_file_name_the_file(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar10", per_file=6)
    folder = tmp_path / C10
    labels = pickle.loads((folder / "data_batch_2").read_bytes())["labels"]
    _rewrite(folder / "data_batch_2", labels=labels[:-1])  # 5 labels for 6 images
    with pytest.raises(DataFileError, match=r"data_batch_2: 5 labels in 'labels' for 6 images") as info:
        load_dataset("cifar10", root=tmp_path)
    assert "exactly one integer label" in str(info.value) and "cifar-10-python.tar.gz" in str(info.value)


def test_cifar_labels_shifted_across_files_with_equal_totals_are_refused(tmp_path: Path) -> None:
    """One label too few in one file and one too many in the next: 30 labels for 30 images in total,
    which loaded every later label onto the wrong image."""
    write_fake_cifar(tmp_path, "cifar10", per_file=6)
    folder = tmp_path / C10
    two = pickle.loads((folder / "data_batch_2").read_bytes())["labels"]
    three = pickle.loads((folder / "data_batch_3").read_bytes())["labels"]
    _rewrite(folder / "data_batch_2", labels=two[:-1])
    _rewrite(folder / "data_batch_3", labels=[two[-1], *three])
    with pytest.raises(DataFileError, match=str(folder / "data_batch_2")):
        load_dataset("cifar10", root=tmp_path)


def test_cifar100_fine_labels_not_matching_images(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar100", per_file=5)
    _rewrite(tmp_path / C100 / "test", fine_labels=[1, 2, 3, 4, 5, 6])
    with pytest.raises(DataFileError, match=r"test: 6 labels in 'fine_labels' for 5 images"):
        load_dataset("cifar100", root=tmp_path)


def test_cifar_float_pixels_in_unit_range_are_refused(tmp_path: Path) -> None:
    raw = write_fake_cifar(tmp_path, "cifar10", per_file=4)
    path = tmp_path / C10 / "data_batch_4"
    _rewrite(path, data=(raw["data_batch_4"][0] / 255.0).astype(np.float32))
    with pytest.raises(DataFileError, match="float32 pixels") as info:
        load_dataset("cifar10", root=tmp_path)
    msg = str(info.value)
    assert str(path) in msg and "uint8 in [0, 255]" in msg and "* 255" in msg


def test_cifar_pixels_out_of_byte_range_are_refused(tmp_path: Path) -> None:
    raw = write_fake_cifar(tmp_path, "cifar10", per_file=4)
    _rewrite(tmp_path / C10 / "test_batch", data=raw["test_batch"][0].astype(np.int64) * 4)
    with pytest.raises(DataFileError, match=r"test_batch: 'data' must hold pixel values in \[0, 255\]"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_labels_out_of_range_are_refused(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar10", per_file=3)
    _rewrite(tmp_path / C10 / "data_batch_1", labels=[0, 10, 3])
    with pytest.raises(DataFileError, match=r"data_batch_1: labels must lie in \[0, 10\) for cifar10"):
        load_dataset("cifar10", root=tmp_path)


@pytest.mark.parametrize("size", ["empty", "half"])
def test_truncated_or_empty_cifar_pickle_names_the_file_and_the_fix(tmp_path: Path, size: str) -> None:
    write_fake_cifar(tmp_path, "cifar10", per_file=4)
    path = tmp_path / C10 / "data_batch_3"
    blob = path.read_bytes()
    path.write_bytes(b"" if size == "empty" else blob[: len(blob) // 2])
    with pytest.raises(DataFileError, match=str(path)) as info:
        load_dataset("cifar10", root=tmp_path)
    msg = str(info.value)
    assert ("is empty" if size == "empty" else "truncated") in msg
    assert f"delete {path} and extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg


def test_cifar10_files_in_the_cifar100_folder_say_where_to_move_them(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar10", per_file=2)
    shutil.move(tmp_path / C10, tmp_path / C100)
    with pytest.raises(FileNotFoundError, match="which holds cifar10 files") as info:
        load_dataset("cifar100", root=tmp_path)
    msg = str(info.value)
    assert f"Move them to {tmp_path / C10}" in msg and "cifar-100-python.tar.gz" in msg


def test_a_cifar10_pickle_named_like_cifar100_says_what_it_is(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar100", per_file=2)
    write_fake_cifar(tmp_path / "other", "cifar10", per_file=2)
    shutil.copy(tmp_path / "other" / C10 / "data_batch_1", tmp_path / C100 / "train")
    with pytest.raises(DataFileError, match="train is a cifar10 file") as info:
        load_dataset("cifar100", root=tmp_path)
    assert f"move it to {tmp_path / C10}" in str(info.value)


# ----------------------------------------------------------------------------- MNIST-1D cache
@pytest.fixture
def mnist_copy(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = mnist1d_root(tmp_path_factory) / "mnist1d"
    shutil.copytree(src, tmp_path / "mnist1d")
    return tmp_path / "mnist1d" / "mnist1d-seed42-5000.npz"


def test_truncated_mnist1d_cache_names_the_file_and_says_delete(mnist_copy: Path) -> None:
    blob = mnist_copy.read_bytes()
    mnist_copy.write_bytes(blob[: len(blob) // 3])
    with pytest.raises(DataFileError, match="corrupted or truncated") as info:
        load_dataset("mnist1d", root=mnist_copy.parent.parent)
    assert str(mnist_copy) in str(info.value) and "delete it" in str(info.value)
    assert mnist_copy.read_bytes() == blob[: len(blob) // 3]  # not rewritten behind the user's back


def test_mnist1d_cache_without_its_arrays_says_delete(mnist_copy: Path) -> None:
    np.savez(mnist_copy, x=np.zeros((3, 40)), y=np.zeros(3))
    with pytest.raises(DataFileError, match=r"lacks \['x_test', 'y_test'\]; delete it"):
        load_dataset("mnist1d", root=mnist_copy.parent.parent)


# ----------------------------------------------------------------------------- load_dataset, label noise
@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(seed=-1), r"seed must be an integer in \[0, 2\*\*32\), got -1"),
    (dict(seed="a"), r"seed must be an integer in \[0, 2\*\*32\), got 'a'"),
])
def test_load_dataset_bad_seed(kwargs: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset("mnist1d", root=tmp_path, label_noise=0.1, **kwargs)
    assert _files(tmp_path) == []  # refused before the cache is generated


def test_load_dataset_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(ValueError, match=f"the data folder {tmp_path / 'data'} is a file; give root="):
        load_dataset("cifar10", root=tmp_path / "data")


Y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


@pytest.mark.parametrize(("targets", "kwargs", "message"), [
    (Y.float(), {}, r"targets must be a 1-d integer tensor of labels, got torch.float32 \(10,\)"),
    ([0, 1, 2], {}, "targets must be a 1-d integer tensor of labels, got list"),
    (Y, dict(num_classes=3.0), "num_classes must be an integer >= 2, got 3.0"),
    (Y, dict(num_classes=True), "num_classes must be an integer >= 2, got True"),
    (Y, dict(seed=-1), r"seed must be an integer in \[0, 2\*\*32\), got -1"),
])
def test_apply_label_noise_bad_inputs(targets: Any, kwargs: dict, message: str) -> None:
    args = dict(num_classes=3) | kwargs
    before = targets.clone() if isinstance(targets, torch.Tensor) else list(targets)
    with pytest.raises(ValueError, match=message):
        apply_label_noise(targets, 0.3, **args)
    assert str(before) == str(targets)


# ----------------------------------------------------------------------------- TrainConfig
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(lr=NAN), "lr must be a finite number >= 0, got nan"),
    (dict(lr=INF), "lr must be a finite number >= 0, got inf"),
    (dict(lr=-0.1), "lr must be a finite number >= 0, got -0.1"),
    (dict(lr="0.1"), "lr must be a finite number >= 0, got '0.1'"),
    (dict(momentum=NAN), r"momentum must be a finite number in \[0, 1\), got nan"),
    (dict(momentum=9), r"momentum must be a finite number in \[0, 1\), got 9"),
    (dict(weight_decay=-5e-4), "weight_decay must be a finite number >= 0, got -0.0005"),
    (dict(sharpness_rho=NAN), "sharpness_rho must be a finite number >= 0, got nan"),
    (dict(optimizer="sam", rho=INF), "rho must be a finite number >= 0, got inf"),
    (dict(optimizer="n-sam", rho=0.1, nsam_samples=-1), "nsam_samples must be an integer >= 1, got -1"),
    (dict(optimizer="n-sam", rho=0.1, nsam_samples=0), "nsam_samples must be an integer >= 1, got 0"),
    (dict(optimizer="rw-sam", rho=0.1, lam=NAN, delta=0.01), "lam must be a finite number >= 0, got nan"),
    (dict(optimizer="rw-sam", rho=0.1, lam=-1.0, delta=0.01), "lam must be a finite number >= 0"),
    (dict(optimizer="rw-sam", rho=0.1, lam=1.0, delta=0), "delta must be a finite number > 0, got 0"),
    (dict(optimizer="rw-sam", rho=0.1, lam=1.0, delta="x"), "delta must be a finite number > 0, got 'x'"),
    (dict(optimizer="m-sam", rho=0.1, m=True), "m must be an integer >= 1, got True"),
    (dict(optimizer="m-sam", rho=0.1, m="4"), "m must be an integer >= 1, got '4'"),
    (dict(optimizer="sam", rho=0.1, m=16), "m=16 is a setting of optimizer='m-sam' or 'm-usam' only"),
    (dict(optimizer="sam", rho=0.1, lam=0.5), "lam=0.5 is a setting of optimizer='rw-sam' or 'rw-usam' only"),
    (dict(optimizer="sgd", nsam_samples=10), "nsam_samples=10 is a setting of optimizer='n-sam' or 'n-usam'"),
    (dict(warmup_epochs=1.5), "warmup_epochs must be an integer >= 0, got 1.5"),
    (dict(warmup_epochs="1"), "warmup_epochs must be an integer >= 0, got '1'"),
    (dict(nesterov="no"), "nesterov must be True or False, got 'no'"),
    (dict(augment="False"), "augment must be True or False, got 'False'"),
    (dict(nesterov=True, momentum=0.0), "nesterov=True needs momentum > 0"),
    (dict(metrics="trace_V"), r"metrics must be a tuple \(or list\), got 'trace_V'"),
    (dict(metric_epochs=3), r"metric_epochs must be a tuple \(or list\), got 3"),
    (dict(metric_epochs=(1.5,)), "metric_epochs entries must be an integer >= 0, got 1.5"),
    (dict(options=[("normalize", False)]), "options must be a mapping"),
    (dict(options={"bogus": 1}), r"options \['bogus'\] are not keyword arguments .* accepted: adaptive"),
    (dict(optimizer="usam", rho=0.1, options={"normalize": True}), r"options \['normalize'\]"),
    (dict(optimizer=None), "optimizer must be one of sgd, sam, usam, .*, rw-sam, rw-usam; got None"),
    (dict(batch_size=np.int64(64)), r"batch_size must be an integer >= 1, got np.int64\(64\)"),
])
def test_train_config_refuses_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_train_config_accepts_numpy_reals_and_keeps_the_hash_of_valid_configs() -> None:
    assert TrainConfig(optimizer="sam", rho=np.float32(0.05), lr=np.float64(0.1)).lr == 0.1
    cfg = TrainConfig(optimizer="m-sam", rho=0.05, m=16, options={"backend": "vmap"})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["rho"] == 0.05


# ----------------------------------------------------------------------------- fit and checkpoints
def _mlp(seed: int = 0, nested: bool = False, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    last: nn.Module = nn.Linear(6, classes)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Sequential(last) if nested else last)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


CFG = TrainConfig(optimizer="sam", rho=0.05, epochs=1, batch_size=16, lr=0.1)


def test_checkpoint_of_another_architecture_with_the_same_parameter_count_is_refused(tmp_path: Path) -> None:
    data, ckpt = toy_dataset(), tmp_path / "run.pt"
    fit(_mlp(), data, CFG, checkpoint=ckpt, fingerprint="mine")
    other = _mlp(seed=1, nested=True)  # the same 57 parameters under other names
    assert sum(p.numel() for p in other.parameters()) == sum(p.numel() for p in _mlp().parameters())
    before, blob = _state(other), ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="holds the weights of another architecture") as info:
        fit(other, data, TrainConfig(optimizer="sam", rho=0.05, epochs=2, batch_size=16, lr=0.1),
            checkpoint=ckpt, fingerprint="mine")
    msg = str(info.value)
    assert str(ckpt) in msg and "missing keys ['2.0.bias', '2.0.weight']" in msg
    assert "nothing was loaded" in msg
    assert _same(before, _state(other)) and ckpt.read_bytes() == blob


def test_init_state_of_another_architecture_is_refused_before_loading() -> None:
    model = _mlp()
    before = _state(model)
    shapes = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4)).state_dict()
    with pytest.raises(CheckpointError, match=r"init_state .*shapes \['2.weight: \(4, 6\) here \(3, 6\)'"):
        fit(model, toy_dataset(), CFG, init_state=shapes)
    assert _same(before, _state(model))


def test_a_checkpoint_not_written_by_fit_is_refused(tmp_path: Path) -> None:
    model, ckpt = _mlp(), tmp_path / "foreign.pt"
    save_checkpoint(ckpt, {"model": model.state_dict()}, "mine")
    before = _state(model)
    with pytest.raises(CheckpointError, match=r"foreign.pt lacks \['epoch', 'optimizer'.*delete it"):
        fit(model, toy_dataset(), CFG, checkpoint=ckpt, fingerprint="mine")
    assert _same(before, _state(model))


@pytest.mark.parametrize(("make", "kwargs", "message"), [
    (lambda: _mlp(classes=5), {}, r"model must return logits \[B, num_classes=3\] .* it returns \(2, 5\)"),
    (lambda: nn.Linear(7, 3), {}, r"model cannot take the inputs of data set 'toy' \(one input has shape"),
    (lambda: _mlp().double(), {}, "model cannot take the inputs .* dtype torch.float32"),
    (lambda: _mlp().requires_grad_(False), {}, "model has no parameter with requires_grad=True"),
    (_mlp, dict(seed=-1), r"seed must be an integer in \[0, 2\*\*32\), got -1"),
    (_mlp, dict(device="meta"), "device='meta': the meta device holds no data"),
    (_mlp, dict(config={"optimizer": "sam"}), "config must be a TrainConfig, got dict"),
])
def test_fit_refuses_before_training(make: Any, kwargs: dict, message: str) -> None:
    model = make()
    before = _state(model)
    args: dict[str, Any] = dict(config=CFG) | kwargs
    config = args.pop("config")
    with pytest.raises(ValueError, match=message):
        fit(model, toy_dataset(), config, **args)
    assert _same(before, _state(model)) and next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("labels", ["int32", "float", "column"])
def test_fit_refuses_labels_cross_entropy_cannot_take(labels: str) -> None:
    data = toy_dataset()
    y = data.train[1]
    y = {"int32": y.int(), "float": y.float(), "column": y[:, None]}[labels]
    bad = type(data)("toy", (data.train[0], y), data.test, num_classes=3, clean_train_targets=y)
    model = _mlp()
    before = _state(model)
    with pytest.raises(ValueError, match=r"data.train must be inputs \[N, ...\] and int64 labels \[N\]"):
        fit(model, bad, CFG)
    assert _same(before, _state(model))


def test_fit_refuses_labels_outside_the_classes() -> None:
    data = toy_dataset()
    bad = type(data)("toy", (data.train[0], data.train[1] + 1), data.test, num_classes=3,
                     clean_train_targets=data.train[1] + 1)
    with pytest.raises(ValueError, match=r"data.train labels must lie in \[0, num_classes=3\), found \[1, 3"):
        fit(_mlp(), bad, CFG)


# ----------------------------------------------------------------------------- cached results, runs
def _smoke_path(out: Path, label: str = "sgd", seed: int = 0) -> Path:
    exp = get_experiment("smoke")
    specs = {s.label: s for s in exp.runs("quick")}
    digest = run_hash(exp, "quick", specs[label], seed, specs)
    return run_path(out, exp, "quick", specs[label], seed, digest)


def _record_without(out: Path, key: str) -> Path:
    path = _smoke_path(out)
    digest = path.stem.rsplit("-", 1)[1]
    record = {"format": "sam_tutorial.result/1", "experiment": "smoke", "mode": "quick", "label": "sgd",
              "seed": 0, "config_hash": digest, "config": {}, "metrics": {"test_acc": 0.5},
              "history": {}, "timing": {"seconds_per_epoch": 1.0}}
    del record[key]
    path.parent.mkdir(parents=True)
    path.write_text(__import__("json").dumps(record))
    return path


@pytest.mark.parametrize("key", ["metrics", "timing", "label"])
def test_a_cached_result_missing_a_key_names_the_file(tmp_path: Path, key: str) -> None:
    path = _record_without(tmp_path, key)
    text = path.read_text()
    with pytest.raises(ResultFileError, match=f"lacks \\['{key}'\\]") as info:
        load_results("smoke", mode="quick", seeds=[0], out=tmp_path)
    msg = str(info.value)
    assert str(path) in msg and "Delete it and recompute it with `python -m sam_tutorial run smoke" in msg
    with pytest.raises(ResultFileError, match=str(path)):  # served from the cache: the same refusal
        run_experiment("smoke", mode="quick", seeds=[0], out=tmp_path, labels=["sgd"], device="cpu")
    assert path.read_text() == text and _files(tmp_path) == [path]


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(seeds=[-1]), r"seeds entries must be an integer in \[0, 2\*\*32\), got -1"),
    (dict(seeds=[2**32]), r"seeds entries must be an integer in \[0, 2\*\*32\), got 4294967296"),
    (dict(seeds="0"), r"seeds must be a list of integers in \[0, 2\*\*32\), got '0'"),
    (dict(seeds=0), r"seeds must be a list of integers"),
    (dict(device="meta"), "device='meta': the meta device holds no data and cannot train"),
    (dict(device="tpu:0"), "device='tpu:0' is not a torch device; accepted values look like 'cpu'"),
])
def test_run_experiment_refuses_before_writing_anything(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_experiment("smoke", mode="quick", out=tmp_path / "runs", **kwargs)
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_run_experiment_on_cuda_without_cuda(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="device='cuda' but CUDA is not available on this machine"):
        run_experiment("smoke", mode="quick", out=tmp_path / "runs", device="cuda")
    assert not (tmp_path / "runs").exists()


def test_run_experiment_output_folder_that_is_empty_or_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"out must be a folder path \(default: \$SAM_TUTORIAL_RUNS or"):
        run_experiment("smoke", mode="quick", out="", device="cpu")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=f"the output folder {tmp_path / 'f'} is a file"):
        run_experiment("smoke", mode="quick", out=tmp_path / "f", device="cpu")


def test_run_lock_leaves_no_file_after_success_or_failure(tmp_path: Path) -> None:
    lock = tmp_path / "r" / "x.lock"
    with run_lock(lock):
        assert lock.exists()
    assert not lock.exists()
    with pytest.raises(KeyError), run_lock(lock):
        raise KeyError("boom")
    assert not lock.exists()
    lock.write_bytes(b"")  # left by a killed run: taken over, then removed
    with run_lock(lock):
        pass
    assert not lock.exists()


# ----------------------------------------------------------------------------- distributed launch
def test_world_size_left_in_the_environment_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"WORLD_SIZE=2 \(RANK=0\) is set .* not started by torch") as info:
        distributed.launched_world_size()
    assert "Unset WORLD_SIZE, RANK and LOCAL_RANK" in str(info.value)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    assert distributed.launched_world_size() == 2
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' and RANK='0' must be integers"):
        distributed.launched_world_size()


def test_init_from_env_without_a_rendezvous_address(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="WORLD_SIZE=2 but MASTER_ADDR and MASTER_PORT unset: launch with"):
        distributed.init_from_env(device="cpu")
    assert not torch.distributed.is_initialized()


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("mlp", dict(num_classes=0), "num_classes must be an integer >= 1, got 0"),
    ("mlp", dict(num_classes=-1), "num_classes must be an integer >= 1, got -1"),
    ("mlp", dict(num_classes=2.5), "num_classes must be an integer >= 1, got 2.5"),
    ("mlp", dict(input_shape=40), r"input_shape must be the shape of one input, e.g. \(40,\)"),
    ("mlp", dict(input_shape=()), r"input_shape must be the shape of one input"),
    ("mlp", dict(input_shape=(40.0,)), "input_shape entries must be an integer >= 1, got 40.0"),
    ("mlp", dict(hidden=(-3,)), "hidden widths must be an integer >= 1, got -3"),
    ("mlp", dict(hidden=256), r"hidden must be a sequence of widths, e.g. \(256, 256\); got 256"),
    ("resnet18", dict(input_shape=(3, 32, 32), width=0), "width must be an integer >= 1, got 0"),
    ("cnn1d", dict(channels=0), "channels must be an integer >= 1, got 0"),
    ("wrn16-4", dict(input_shape=(3, 32, 32), dropout=2.0), r"dropout must be a finite number in \[0, 1\)"),
])
def test_build_model_bad_inputs(name: str, kwargs: dict, message: str) -> None:
    args: dict[str, Any] = dict(num_classes=10, input_shape=(40,)) | kwargs
    with pytest.raises(ValueError, match=message):
        build_model(name, **args)


# ----------------------------------------------------------------------------- loader
X8 = torch.randn(10, 3, 8, 8)
Y10 = torch.randint(0, 3, (10,))


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((X8, Y10[:, None], 2), {}, r"targets must be one label per sample, shape \[N\]; got \(10, 1\)"),
    (([[1.0]] * 10, Y10, 2), {}, "inputs must be a tensor with the samples on dim 0, got list"),
    ((X8, Y10, 2), dict(augment=True, padding=-1), "padding must be an integer >= 0, got -1"),
    ((X8, Y10, 2), dict(seed=-1), r"seed must be an integer in \[0, 2\*\*32\), got -1"),
    ((X8, Y10, 2), dict(seed="a"), r"seed must be an integer in \[0, 2\*\*32\), got 'a'"),
    ((X8, Y10, 2), dict(device="meta"), "device='meta': the meta device holds no data"),
    ((X8, Y10, 2), dict(augment=True, fill=torch.zeros(2)), "fill must be a number or one value per"),
])
def test_batch_loader_bad_inputs(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchLoader(*args, **kwargs)


def test_batch_loader_bad_state_changes_nothing() -> None:
    loader = BatchLoader(X8, Y10, 2, seed=3)
    before = loader.generator.get_state().clone()
    for bad in ({}, {"generator": torch.zeros(3)}, [1]):
        with pytest.raises(ValueError, match=r"state must be BatchLoader.state_dict\(\) output"):
            loader.load_state_dict(bad)  # type: ignore[arg-type]
    assert torch.equal(before, loader.generator.get_state())
    assert math.isfinite(float(next(iter(loader))[0].sum()))
