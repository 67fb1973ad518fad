"""Per-step metrics of fit (book chapter 5: RW-SAM's effective batch and the weight on mislabelled samples):
the device-side epoch means equal a host-side recomputation from the recorded steps, they cost no host
synchronisation per step, and each batch's indices are the rows it came from."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from sam_tutorial.engine.data import Dataset
from sam_tutorial.engine.loader import BatchLoader
from sam_tutorial.engine.measure import STEP_METRICS
from sam_tutorial.engine.train import fit
from sam_tutorial.engine.train_config import TrainConfig, cross_entropy
from sam_tutorial.optim import StepStats
from tests.engine.helpers import count_host_syncs, toy_dataset

RW = dict(optimizer="rw-sam", rho=0.1, lam=3.0, delta=1e-2)


def noisy_toy(n: int = 48) -> Dataset:
    data = toy_dataset(n=n)
    noisy_y = data.train[1].clone()
    noisy_y[: n // 4] = (noisy_y[: n // 4] + 1) % 3
    return replace(data, train=(data.train[0], noisy_y), label_noise=0.25)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))


def test_epoch_means_equal_a_host_recomputation_from_every_step() -> None:
    data = noisy_toy()
    steps: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def keep(stats: StepStats, idx: torch.Tensor) -> torch.Tensor:
        assert stats.weights is not None
        steps.append((stats.weights.clone(), idx.clone(), float(stats.perturbation_norm)))
        return torch.zeros(())

    config = TrainConfig(**RW, epochs=2, batch_size=8, lr=0.1)
    h = fit(mlp(), data, config, step_metrics={"keep": keep}).history["step"]
    per_epoch = len(data.train[1]) // 8
    noisy = data.noisy.numpy()
    for e in range(2):
        chunk = steps[e * per_epoch : (e + 1) * per_epoch]
        ess = np.mean([1 / float((p.double() ** 2).sum()) for p, _, _ in chunk])
        weight = np.mean([float(p[torch.from_numpy(noisy[i.numpy()])].sum()) for p, i, _ in chunk])
        share = np.mean([noisy[i.numpy()].mean() for _, i, _ in chunk])
        assert h["effective_batch"][e] == pytest.approx(ess, rel=1e-5)
        assert h["mislabelled_weight"][e] == pytest.approx(weight, rel=1e-5, abs=1e-7)
        assert h["mislabelled_share"][e] == pytest.approx(share, rel=1e-6)
        assert h["perturbation_norm"][e] == pytest.approx(np.mean([n for _, _, n in chunk]), rel=1e-5)
    assert 1 <= min(h["effective_batch"]) and max(h["effective_batch"]) <= 8
    assert set(h) == {*STEP_METRICS, "keep"}


def test_what_does_not_apply_is_absent_and_final_holds_the_last_epoch() -> None:
    result = fit(mlp(), toy_dataset(n=32), TrainConfig(optimizer="sam", rho=0.05, epochs=2, batch_size=8))
    assert set(result.history["step"]) == {"perturbation_norm"}  # no weights, no label noise
    assert result.history["step"]["perturbation_norm"] == pytest.approx([0.05, 0.05], rel=1e-5)
    assert result.final["perturbation_norm"] == result.history["step"]["perturbation_norm"][-1]


def test_a_hook_may_not_take_a_built_in_name() -> None:
    with pytest.raises(ValueError, match="built in"):
        fit(mlp(), toy_dataset(n=16), TrainConfig(epochs=1, batch_size=8),
            step_metrics={"effective_batch": lambda s, i: torch.zeros(())})


def test_step_metrics_add_no_host_sync_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = count_host_syncs(monkeypatch)

    def syncs(n: int) -> int:
        counts["n"] = 0
        fit(mlp(), noisy_toy(n), TrainConfig(**RW, epochs=2, batch_size=8))
        return counts["n"]

    assert syncs(16) == syncs(96)  # 2 and 12 steps per epoch


def test_with_indices_gives_the_rows_and_draws_like_plain_iteration() -> None:
    x, y = torch.randn(20, 3), torch.arange(20)
    a, b = BatchLoader(x, y, 6, seed=3), BatchLoader(x, y, 6, seed=3)
    for (xa, ya), (xb, yb, idx) in zip(a, b.with_indices(), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(x[idx], xb) and torch.equal(y[idx], yb)
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_trace_H_metric_is_hutchinson_on_the_first_samples() -> None:
    from sam_tutorial.curvature.hutchinson import hessian_trace

    data = toy_dataset(n=32)
    result = fit(mlp(), data, TrainConfig(epochs=1, batch_size=8, metrics=("trace_H",), metric_samples=16))
    direct = hessian_trace(result.model, cross_entropy, data.train[0][:16], data.train[1][:16], n_probes=32)
    assert result.final["trace_H"] == pytest.approx(float(direct), rel=1e-5)
