"""Tests for sam_tutorial.engine.train: the loop against a hand-written one, schedule, resume, no per-step
sync."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from sam_tutorial.engine.measure import evaluate
from sam_tutorial.engine.storage import CheckpointError
from sam_tutorial.engine.train import fit
from sam_tutorial.engine.train_config import TrainConfig, cross_entropy, make_optimizer
from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM
from tests.engine.helpers import count_host_syncs, image_dataset, tiny_convnet, toy_dataset


def linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(5, 3)


def without_seconds(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "seconds"}


# ----------------------------------------------------------------------------- the loop itself
def test_sgd_fit_equals_a_hand_written_loop() -> None:
    data = toy_dataset(n=64)
    config = TrainConfig(optimizer="sgd", epochs=3, batch_size=16, lr=0.1, momentum=0.9, weight_decay=1e-3)
    model, ref = linear(), linear()
    result = fit(model, data, config, seed=4)

    x, y = data.train
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    g = torch.Generator().manual_seed(4)
    total, step, epoch_losses, epoch_lrs = 12, 0, [], []
    for _ in range(3):
        perm = torch.randperm(64, generator=g)
        losses = []
        epoch_lrs.append(0.1 * 0.5 * (1 + math.cos(math.pi * step / total)))
        for i in range(4):
            idx = perm[16 * i : 16 * i + 16]
            for group in opt.param_groups:
                group["lr"] = 0.1 * 0.5 * (1 + math.cos(math.pi * step / total))
            opt.zero_grad()
            loss = nn.functional.cross_entropy(ref(x[idx]), y[idx])
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
        epoch_losses.append(sum(losses) / 4)

    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert result.history["train_loss"] == pytest.approx(epoch_losses, abs=1e-6)
    assert result.history["lr"] == pytest.approx(epoch_lrs, abs=1e-12)
    xt, yt = data.test
    with torch.no_grad():
        acc = (ref(xt).argmax(1) == yt).float().mean().item()
        test_loss = nn.functional.cross_entropy(ref(xt), yt).item()
    assert result.final["test_acc"] == pytest.approx(acc, abs=1e-6)
    assert result.final["test_loss"] == pytest.approx(test_loss, abs=1e-5)
    assert result.history["epoch"] == [1, 2, 3] and result.resumed_from == 0


def test_warmup_then_cosine_is_the_closed_form() -> None:
    data = toy_dataset(n=32)
    config = TrainConfig(optimizer="sgd", epochs=4, batch_size=8, lr=0.2, warmup_epochs=1)
    result = fit(linear(), data, config)
    steps, total, warm = 4, 16, 4
    want = []
    for e in range(4):
        t = e * steps
        cosine = 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
        want.append(0.2 * ((t + 1) / warm if t < warm else cosine))
    assert result.history["lr"] == pytest.approx(want, abs=1e-12)
    const = fit(linear(), data, TrainConfig(optimizer="sgd", epochs=2, batch_size=8, schedule="constant"))
    assert const.history["lr"] == [0.05, 0.05]


def test_evaluate_returns_device_tensors_matching_a_direct_computation() -> None:
    data = toy_dataset(n=40, n_test=37)
    model = linear(1)
    loss, acc = evaluate(model, *data.test, batch_size=10)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0
    with torch.no_grad():
        out = model(data.test[0])
    assert float(loss) == pytest.approx(float(cross_entropy(out, data.test[1]).mean()), abs=1e-6)
    assert float(acc) == pytest.approx(float((out.argmax(1) == data.test[1]).float().mean()), abs=1e-7)


# ----------------------------------------------------------------------------- optimizers by name
def test_make_optimizer_builds_what_the_config_names() -> None:
    data = toy_dataset()
    model = linear()
    opt = make_optimizer(model, TrainConfig(optimizer="sgd", lr=0.3, momentum=0.5, weight_decay=0.01), data)
    assert type(opt) is SAM and opt.rho == 0.0
    assert opt.param_groups[0]["lr"] == 0.3 and opt.param_groups[0]["momentum"] == 0.5
    assert opt.param_groups[0]["weight_decay"] == 0.01
    usam = make_optimizer(model, TrainConfig(optimizer="usam", rho=0.2), data)
    assert type(usam) is SAM and usam.rho == 0.2 and not usam.normalize
    msam_config = TrainConfig(optimizer="m-sam", rho=0.1, m=16, options={"backend": "vmap"})
    msam = make_optimizer(model, msam_config, data)
    assert type(msam) is MSAM and msam.m == 16 and msam.backend == "vmap"
    rw = make_optimizer(model, TrainConfig(optimizer="rw-sam", rho=0.1, lam=0.5, delta=1e-3), data, seed=9)
    assert type(rw) is RWSAM and (rw.lam, rw.delta, rw.seed) == (0.5, 1e-3, 9)
    ns = make_optimizer(model, TrainConfig(optimizer="n-sam", rho=0.1, nsam_samples=10), data)
    assert type(ns) is NSAM and ns.n == 10


def test_nsam_over_the_whole_set_with_full_batches_equals_sam() -> None:
    """n-SAM's perturbation over the training set is SAM's when every batch is the training set."""
    data = toy_dataset(n=32)
    base = dict(epochs=3, batch_size=32, lr=0.1)
    a, b = linear(), linear()
    fit(a, data, TrainConfig(optimizer="n-sam", rho=0.2, **base))
    fit(b, data, TrainConfig(optimizer="sam", rho=0.2, **base))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- metrics
def test_builtin_metrics_equal_independent_computations() -> None:
    from sam_tutorial.curvature.sharpness import sam_sharpness
    from sam_tutorial.sgn.variance import trace_V

    data = toy_dataset(n=48)
    model = linear(2)
    start = copy.deepcopy(model)
    config = TrainConfig(optimizer="sam", rho=0.05, epochs=2, batch_size=16, metrics=("trace_V", "sharpness"),
                         metric_epochs=(0, 2), metric_samples=20, sharpness_rho=0.1)
    hist = fit(model, data, config).history["metrics"]
    x, y = data.train[0][:20], data.train[1][:20]
    assert hist["epoch"] == [0, 2]
    assert hist["trace_V"][0] == pytest.approx(float(trace_V(start, cross_entropy, x, y)), rel=1e-5)
    assert hist["trace_V"][1] == pytest.approx(float(trace_V(model, cross_entropy, x, y)), rel=1e-5)
    assert hist["sharpness"][1] == pytest.approx(float(sam_sharpness(model, cross_entropy, x, y, rho=0.1)),
                                                 rel=1e-5)


def test_user_hooks_default_to_the_last_epoch() -> None:
    data = toy_dataset(n=32)
    calls = []

    def norm(model: nn.Module) -> torch.Tensor:
        calls.append(1)
        return model.weight.norm()

    model = linear()
    result = fit(model, data, TrainConfig(epochs=3, batch_size=8), metrics={"wnorm": norm})
    assert result.history["metrics"]["epoch"] == [3] and len(calls) == 1
    assert result.final["wnorm"] == pytest.approx(float(model.weight.detach().norm()))
    with pytest.raises(ValueError, match="defined twice"):
        config = TrainConfig(epochs=1, batch_size=8, metrics=("trace_V",))
        fit(linear(), data, config, metrics={"trace_V": norm})


def test_label_noise_adds_clean_accuracy_and_eval_train_can_be_off() -> None:
    from dataclasses import replace

    data = toy_dataset(n=40)
    noisy_y = data.train[1].clone()
    noisy_y[:10] = (noisy_y[:10] + 1) % 3
    noisy = replace(data, train=(data.train[0], noisy_y), label_noise=0.25)
    model = linear()
    h = fit(model, noisy, TrainConfig(epochs=1, batch_size=8)).history
    with torch.no_grad():
        pred = model(data.train[0]).argmax(1)
    assert h["train_acc"][0] == pytest.approx(float((pred == noisy_y).float().mean()))
    assert h["train_acc_clean"][0] == pytest.approx(float((pred == data.train[1]).float().mean()))
    off = fit(linear(), data, TrainConfig(epochs=1, batch_size=8, eval_train=False)).history
    assert off["train_acc"] == [None] and "train_acc_clean" not in off


# ----------------------------------------------------------------------------- no host sync per step
@pytest.mark.parametrize("kind", [dict(optimizer="sam", rho=0.1), dict(optimizer="m-sam", rho=0.1, m=2),
                                  dict(optimizer="rw-sam", rho=0.1, lam=1.0, delta=1e-3)])
def test_host_syncs_do_not_grow_with_the_number_of_steps(
    monkeypatch: pytest.MonkeyPatch, kind: dict
) -> None:
    counts = count_host_syncs(monkeypatch)

    def syncs(n: int) -> int:
        data = toy_dataset(n=n)
        model = linear()
        counts["n"] = 0
        fit(model, data, TrainConfig(epochs=2, batch_size=8, **kind))
        return counts["n"]

    few, many = syncs(16), syncs(128)  # 2 and 16 steps per epoch
    assert few == many


# ----------------------------------------------------------------------------- checkpoints and resume
class Interrupt(Exception):
    pass


def interrupting(at_call: int | None) -> Callable[[nn.Module], torch.Tensor]:
    calls = {"n": 0}

    def hook(model: nn.Module) -> torch.Tensor:
        calls["n"] += 1
        if at_call is not None and calls["n"] == at_call:
            raise Interrupt
        return torch.zeros(())

    return hook


def dropout_convnet(seed: int) -> nn.Module:
    net = tiny_convnet(seed=seed)
    return nn.Sequential(net[:5], nn.Dropout(0.3), net[5])  # dropout draws from the global generator


@pytest.mark.parametrize("kind", [dict(optimizer="sgd"), dict(optimizer="m-sam", rho=0.1, m=4),
                                  dict(optimizer="rw-sam", rho=0.1, lam=2.0, delta=1e-3)])
def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, kind: dict) -> None:
    data = image_dataset(n=32)
    config = TrainConfig(epochs=4, batch_size=8, augment=True, metric_epochs=(1, 2, 3, 4), **kind)

    torch.manual_seed(100)
    whole = dropout_convnet(0)
    ref = fit(whole, data, config, seed=3, checkpoint=tmp_path / "ref.pt", metrics={"h": interrupting(None)})

    torch.manual_seed(100)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupt):  # dies during epoch 3, after the checkpoint of epoch 2
        fit(dropout_convnet(0), data, config, seed=3, checkpoint=ckpt, metrics={"h": interrupting(3)})
    torch.manual_seed(12345)  # the global generators are restored from the checkpoint, not from here
    resumed_model = dropout_convnet(7)  # other initial weights: they must come from the checkpoint
    resumed = fit(resumed_model, data, config, seed=3, checkpoint=ckpt, metrics={"h": interrupting(None)})

    assert resumed.resumed_from == 2 and ref.resumed_from == 0
    assert without_seconds(resumed.history) == without_seconds(ref.history)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed_model.state_dict().items()):
        assert torch.equal(a, b), name  # weights and BatchNorm statistics, bit for bit
    # a finished run called again does no work and returns the same history
    again = fit(dropout_convnet(5), data, config, seed=3, checkpoint=ckpt, metrics={"h": interrupting(1)})
    assert again.resumed_from == 4 and without_seconds(again.history) == without_seconds(ref.history)


def test_corrupted_foreign_and_mismatched_checkpoints_are_refused(tmp_path: Path) -> None:
    data = toy_dataset(n=16)
    config = TrainConfig(epochs=1, batch_size=8)
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(os.urandom(300))
    with pytest.raises(CheckpointError, match="corrupted or not a sam_tutorial checkpoint"):
        fit(linear(), data, config, checkpoint=ckpt)
    torch.save({"model": linear().state_dict()}, ckpt)
    with pytest.raises(CheckpointError, match="is not a sam_tutorial checkpoint"):
        fit(linear(), data, config, checkpoint=ckpt)
    ckpt.unlink()
    fit(linear(), data, config, checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="another run configuration"):
        fit(linear(), data, TrainConfig(epochs=1, batch_size=8, lr=0.3), checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="another run configuration"):
        fit(linear(), data, config, seed=1, checkpoint=ckpt)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    torch.save({"format": "sam_tutorial.checkpoint/1", "state": _Payload(marker)}, ckpt)
    with pytest.raises(CheckpointError, match="corrupted or not a sam_tutorial checkpoint"):
        fit(linear(), toy_dataset(n=16), TrainConfig(epochs=1, batch_size=8), checkpoint=ckpt)
    assert not marker.exists()


@pytest.mark.gpu
@pytest.mark.parametrize("kind", [dict(optimizer="m-sam", rho=0.1, m=4),
                                  dict(optimizer="rw-sam", rho=0.1, lam=1.0, delta=1e-3),
                                  dict(optimizer="n-sam", rho=0.1)])
def test_fit_on_cuda_from_cpu_data(tmp_path: Path, kind: dict) -> None:
    """Data sets live on the CPU; fit moves what it needs (loader, test set, metrics, n-SAM's data)."""
    data = image_dataset(n=32)
    config = TrainConfig(epochs=2, batch_size=8, augment=True, metrics=("trace_V",), **kind)
    model = tiny_convnet()
    result = fit(model, data, config, device="cuda", checkpoint=tmp_path / "c.pt")
    assert next(model.parameters()).is_cuda and len(result.history["test_acc"]) == 2
    resumed = fit(tiny_convnet(seed=1), data, config, device="cuda", checkpoint=tmp_path / "c.pt")
    assert resumed.resumed_from == 2 and without_seconds(resumed.history) == without_seconds(result.history)


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(optimizer="adam"), "optimizer must be one of sgd, sam, usam, asam, n-sam"),
        (dict(optimizer="sgd", rho=0.1), "rho must be 0 for optimizer='sgd'"),
        (dict(optimizer="sam", rho=-1.0), "rho must be a finite number >= 0"),
        (dict(optimizer="m-sam", rho=0.1), "needs m"),
        (dict(optimizer="m-sam", rho=0.1, m=3, batch_size=8), "m=3 must divide batch_size=8"),
        (dict(optimizer="rw-sam", rho=0.1, lam=1.0), "needs lam"),
        (dict(schedule="step"), "schedule must be one of cosine, constant"),
        (dict(epochs=0), "epochs must be an integer >= 1"),
        (dict(metrics=("hessian",)), "metrics must be among trace_V, sharpness"),
        (dict(epochs=2, metric_epochs=(3,)), "metric_epochs must lie in \\[0, epochs=2\\]"),
        (dict(epochs=2, warmup_epochs=3), "warmup_epochs"),
    ],
)
def test_bad_configs_name_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_config_round_trips_through_a_dict() -> None:
    config = TrainConfig(optimizer="m-sam", rho=0.1, m=8, options={"backend": "loop"}, metrics=("trace_V",),
                         metric_epochs=(3, 0))
    assert config.metric_epochs == (0, 3)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields \\['lr_max'\\]"):
        TrainConfig.from_dict({"lr_max": 1})


# ----------------------------------------------------------------------------- validation split
def test_validation_split_is_held_out_and_evaluated_like_the_test_set() -> None:
    from dataclasses import replace

    from sam_tutorial.engine.train import split_validation

    data = toy_dataset(n=40)
    noisy_y = data.train[1].clone()
    noisy_y[-4:] = (noisy_y[-4:] + 1) % 3
    noisy = replace(data, train=(data.train[0], noisy_y), label_noise=0.1)
    rest, val = split_validation(noisy, 0.25)
    assert len(rest.train[1]) == 30 and len(val[0]) == 10 and len(val) == 3
    assert torch.equal(torch.cat([rest.train[0], val[0]]), data.train[0])  # disjoint, nothing lost
    model = linear()
    config = TrainConfig(epochs=2, batch_size=10, val_fraction=0.25)
    h = fit(model, noisy, config).history
    # trained on 30 samples: 3 steps per epoch, the same weights as a run on the cut set without a split
    ref = linear()
    fit(ref, rest, TrainConfig(epochs=2, batch_size=10))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    with torch.no_grad():
        pred = model(val[0]).argmax(1)
    assert h["val_acc"][-1] == pytest.approx(float((pred == val[1]).float().mean()))
    assert h["val_acc_clean"][-1] == pytest.approx(float((pred == val[2]).float().mean()))
    assert "val_fraction" not in TrainConfig().to_dict() and config.to_dict()["val_fraction"] == 0.25


@pytest.mark.parametrize("fraction", [1.0, -0.1, 0.001])
def test_a_validation_split_that_leaves_nothing_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        fit(linear(), toy_dataset(n=40), TrainConfig(epochs=1, batch_size=8, val_fraction=fraction))
