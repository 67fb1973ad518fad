"""The paper's configurations (Tables 1, 4 and 6 of Luo et al., NeurIPS 2025) as experiments:
CIFAR-10/100 with ResNet-18/50 and WRN-28-10, SGD / SAM / RW-SAM; and the experiments that would decide
the book's open questions at the paper's scale (:mod:`sam_tutorial.engine.catalog.deciding`).

They need CIFAR in the data folder and a GPU: ``paper`` mode is the paper's configuration (200 epochs),
``standard`` the same models and data for 10 epochs, ``quick`` a CPU-sized pipeline check (narrow
models, 512 images, 1 epoch). Every choice the paper does not state is marked UNCONFIRMED in
``PAPER_NOTES`` (``python -m sam_tutorial show NAME`` prints it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sam_tutorial.engine.catalog.registry import register
from sam_tutorial.engine.runs import (
    DataSpec,
    Experiment,
    RunSpec,
)
from sam_tutorial.engine.train_config import TrainConfig
from sam_tutorial.published import TABLE1, TABLE4, TABLE6  # the paper's numbers, with their sources

__all__ = ["PAPER_MODELS", "PAPER_NOTES", "PAPER_SEEDS", "TABLE1", "TABLE4"]


# ============================================================================ paper configurations
PAPER_NOTES = (
    "Paper values: Table 1 of Luo et al. (NeurIPS 2025). Assumed (UNCONFIRMED, following EigenSAM and "
    "common SAM practice): 200 epochs, batch 128, SGD momentum 0.9, weight decay 5e-4, cosine learning "
    "rate from 0.1 stepped every iteration, random crop (padding 4) + horizontal flip, BatchNorm, "
    "rho 0.05 (CIFAR-10) / 0.1 (CIFAR-100), RW-SAM lambda 0.1 (as in the chapters) and a ±1 probe of "
    "radius delta = 0.01 (the same for every model), uniform descent pass, 3 seeds. 'standard' mode: "
    "10 epochs; "
    "'quick': width-8 models, 512 images, 1 epoch."
)


PAPER_MODELS = {  # name -> (parameters with 10 classes, quick-mode stand-in)
    "resnet18": (11_173_962, ("resnet18", {"width": 8})),
    "resnet50": (23_520_842, ("resnet50", {"width": 8})),
    "wrn28-10": (36_479_194, ("wrn", {"depth": 10, "widen_factor": 1})),
}


def _paper_runs(
    model: str,
    dataset: str,
    mode: str,
    noise: float = 0.0,
    metrics: tuple[str, ...] = (),
    variants: Sequence[str] = ("sgd", "sam", "rw-sam"),
) -> list[RunSpec]:
    params, (quick_model, quick_options) = PAPER_MODELS[model]
    rho = 0.05 if dataset == "cifar10" else 0.1
    epochs = {"quick": 1, "standard": 10, "paper": 200}[mode]
    n = 512 if mode == "quick" else None
    data = DataSpec(dataset, n, n, label_noise=noise)
    name, options = (quick_model, quick_options) if mode == "quick" else (model, {})
    base: dict[str, Any] = dict(
        epochs=epochs,
        batch_size=128,
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        augment=True,
        eval_train=False,
        metrics=metrics,
        metric_samples=1000,
    )
    delta = 0.01  # RW-SAM's probe radius ||w+ - w||, valid for any number of parameters
    settings: dict[str, Any] = {
        "sgd": dict(optimizer="sgd"),
        "sam": dict(optimizer="sam", rho=rho),
        "rw-sam": dict(optimizer="rw-sam", rho=rho, lam=0.1, delta=delta),
    }
    suffix = f"-noise{round(noise * 100)}" if noise else ""
    return [
        RunSpec(
            f"{v}{suffix}",
            data,
            name,
            TrainConfig(**settings[v], **base),
            options,
            None,
            {"optimizer": v, "model": model, "dataset": dataset, **({"noise": noise} if noise else {})},
        )
        for v in variants
    ]


def _table1_runs(model: str, dataset: str, mode: str) -> list[RunSpec]:
    return _paper_runs(model, dataset, mode)


def _table4_runs(noise: float, mode: str) -> list[RunSpec]:
    return _paper_runs("resnet18", "cifar10", mode, noise=noise)


def _table6_runs(mode: str) -> list[RunSpec]:
    return _paper_runs("resnet18", "cifar10", mode, metrics=("trace_V",))


PAPER_SEEDS = {"quick": (0,), "standard": (0,), "paper": (0, 1, 2)}


for (_model, _data), _paper in TABLE1.items():
    register(
        Experiment(
            f"table1-{_model}-{_data}",
            f"paper Table 1: {_model} on {_data.upper()}, SGD / SAM / RW-SAM "
            f"(paper: {_paper[0]} / {_paper[1]} / {_paper[2]} %)",
            functools.partial(_table1_runs, _model, _data),
            PAPER_SEEDS,
            "06_reproduction",
            PAPER_NOTES,
        )
    )


for _noise, _paper in TABLE4.items():
    register(
        Experiment(
            f"table4-noise{round(_noise * 100)}",
            f"paper Table 4: {round(_noise * 100)} % label noise, ResNet-18 on CIFAR-10, SGD / SAM / RW-SAM "
            f"(paper: {_paper[0]} / {_paper[1]} / {_paper[2]} %)",
            functools.partial(_table4_runs, _noise),
            PAPER_SEEDS,
            "06_reproduction",
            PAPER_NOTES
            + " Table 4's model and data set (ResNet-18, CIFAR-10) and its noise model (a corrupted "
            "label moves to one of the other classes) are UNCONFIRMED.",
        )
    )


register(
    Experiment(
        "table6-resnet18-cifar10",
        "paper Table 6: tr V at the solution, ResNet-18 on CIFAR-10 (paper: "
        + ", ".join(f"{k} {v[0]:.2f}" for k, v in TABLE6.items())
        + ")",
        _table6_runs,
        PAPER_SEEDS,
        "06_reproduction",
        PAPER_NOTES + " Table 6's model, data set and the samples tr V is computed on are UNCONFIRMED; here: "
        "ResNet-18, CIFAR-10, the first 1000 training samples (eval mode) after the last epoch.",
    )
)
