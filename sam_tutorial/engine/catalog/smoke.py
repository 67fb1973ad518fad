"""``smoke``: a few epochs of SGD, SAM, m-SAM and RW-SAM on MNIST-1D, a check of the whole pipeline for the
command line and the tests (no chapter uses it)."""

from __future__ import annotations

from typing import Any

from sam_tutorial.engine.catalog.mlp import mlp_run
from sam_tutorial.engine.catalog.registry import register
from sam_tutorial.engine.runs import Experiment, RunSpec
from sam_tutorial.engine.train_config import TrainConfig

__all__: list[str] = []


def _smoke(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    base: dict[str, Any] = dict(epochs=2, batch_size=64) if quick else dict(epochs=5, batch_size=128)
    variants: dict[str, dict[str, Any]] = {
        "sgd": dict(optimizer="sgd"),
        "sam": dict(optimizer="sam", rho=0.05),
        "m-sam-m16": dict(optimizer="m-sam", rho=0.05, m=16),
        "rw-sam": dict(optimizer="rw-sam", rho=0.05, lam=0.1, delta=0.01),
    }
    return [mlp_run(label, mode, TrainConfig(**kw, **base), {"optimizer": kw["optimizer"]})
            for label, kw in variants.items()]


register(Experiment(
    "smoke",
    "tiny MNIST-1D run of SGD, SAM, m-SAM and RW-SAM (checks the whole pipeline)",
    _smoke,
    {"quick": (0,), "standard": (0,), "paper": (0,)},
    cli_only="a pipeline check for the command line, the tests and the CI",
))
