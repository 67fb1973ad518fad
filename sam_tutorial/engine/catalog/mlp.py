"""The MNIST-1D MLP setting the smoke test and chapter 4's MLP experiments share: the MLP 40-256-256-10 of
the CPU-scale probes, SGD with momentum 0.9, weight decay 5e-4, cosine learning rate from 0.05, batch 128
(the :class:`~sam_tutorial.engine.train_config.TrainConfig` defaults); ``quick`` mode keeps 1000 training
and 500 test samples."""

from __future__ import annotations

from typing import Any

from sam_tutorial.engine.runs import DataSpec, RunSpec
from sam_tutorial.engine.train_config import TrainConfig

__all__ = ["MLP", "SEEDS", "mlp_run", "mnist1d"]

MLP = {"hidden": (256, 256)}
"""Options of the MLP 40-256-256-10."""

SEEDS = {"quick": (0,), "standard": (0, 1), "paper": (0, 1)}


def mnist1d(mode: str, **noise: Any) -> DataSpec:
    """Quick mode keeps 1000 training and 500 test samples; the others the standard 4000 / 1000."""
    return DataSpec("mnist1d", 1000, 500, **noise) if mode == "quick" else DataSpec("mnist1d", **noise)


def mlp_run(label: str, mode: str, train: TrainConfig, tags: dict[str, Any] | None = None,
            data: DataSpec | None = None, init_from: str | None = None) -> RunSpec:
    """One run of the MLP on MNIST-1D (``data``: default :func:`mnist1d` of ``mode``)."""
    return RunSpec(label, data or mnist1d(mode), "mlp", train, MLP, init_from, tags or {})
