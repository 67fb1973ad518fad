"""Chapter 4's experiments (book chapter 4, m-sharpness): ``m-sharpness-cnn``, ``escape`` and, for the
command line only, ``m-sweep``.

``escape``: from an SGD solution of the MNIST-1D MLP (:mod:`sam_tutorial.engine.catalog.mlp`), SGD, n-SAM,
SAM and m-SAM (m = 32, 8) and the decay of tr V epoch by epoch. ``m-sweep``: m-SAM at rho 0.05 for m = 128
(SAM), 32, 16, 8 and SGD on the same MLP (a null result; README's example).

The m-sweep where SAM matters is a wide 1-D CNN on MNIST-1D with noisy labels.

``m-sharpness-cnn``: MNIST-1D, the first 2000 training samples with 30 % symmetric label noise (the
1000 test samples clean), the 1-D CNN with 64 channels (``cnn1d``), batch 128, 100 epochs, SGD with
momentum 0.9, weight decay 5e-4, cosine learning rate from 0.05. SGD memorises every noisy label in
this setting, so the regulariser has something to do. Runs: SGD, and for each m in (128 = SAM, 32, 8,
2000 = n-SAM) normalised m-SAM on a grid of radii (``GRID``).

* ``paper`` mode is the whole grid, seeds 0-2: the exploration recorded in
  ``results/m-sharpness-cnn.json`` (about 40 s per run on one CPU core; 40 runs per seed).
* ``standard`` mode is SGD and m-SAM with ``m = 8`` at its best radius (``BEST_RHO``), seed 0: what the
  chapter trains live (about 1.5 min on a free core), to check the recorded numbers.
* ``quick`` mode is a pipeline check (256 samples, 8 channels, 2 epochs).
"""

from __future__ import annotations

from typing import Any

from sam_tutorial.engine.catalog.mlp import SEEDS, mlp_run
from sam_tutorial.engine.catalog.registry import register
from sam_tutorial.engine.runs import DataSpec, Experiment, RunSpec
from sam_tutorial.engine.train_config import TrainConfig

__all__ = ["BATCH", "BEST_RHO", "GRID", "NSAM_SAMPLES", "N_TRAIN", "label"]

BATCH = 128

N_TRAIN = 2000
"""Training samples; ``m = N_TRAIN`` stands for n-SAM (the perturbation from the full gradient)."""

NSAM_SAMPLES = 512
"""n-SAM's perturbation is the gradient of the first 512 training samples (the exact full gradient would
cost 16 batches per step; a secondary summary of the paper allows a large batch as the approximation:
book/sources.md)."""

GRID: dict[int, tuple[float, ...]] = {
    128: (0.1, 0.2, 0.3, 0.5),
    32: (0.05, 0.1, 0.15, 0.2),
    8: (0.03, 0.05, 0.07, 0.1, 0.14),
    N_TRAIN: (0.1, 0.3),
}
"""Radii tried per micro-batch size (m = 128 is SAM); the recorded sweep's best sits inside each row."""

BEST_RHO: dict[int, float] = {128: 0.2, 32: 0.15, 8: 0.1}
"""The radius with the best mean test accuracy per m in the recorded sweep (``paper`` mode)."""


def label(m: int | None, rho: float) -> str:
    """Run label: ``sgd``, ``sam-rho0.3``, ``m-sam-m8-rho0.07`` or ``n-sam-rho0.1``."""
    if m is None:
        return "sgd"
    if m == N_TRAIN:
        return f"n-sam-rho{rho:g}"
    return f"sam-rho{rho:g}" if m == BATCH else f"m-sam-m{m}-rho{rho:g}"


def _run(mode: str, m: int | None, rho: float) -> RunSpec:
    quick = mode == "quick"
    data = DataSpec("mnist1d", 256 if quick else N_TRAIN, 256 if quick else None, label_noise=0.3)
    if m is None:
        kind: dict[str, object] = dict(optimizer="sgd")
    elif m == N_TRAIN:
        kind = dict(optimizer="n-sam", rho=rho, nsam_samples=NSAM_SAMPLES)
    elif m == BATCH:
        kind = dict(optimizer="sam", rho=rho)
    else:
        kind = dict(optimizer="m-sam", rho=rho, m=m, options={"backend": "vmap"})
    train = TrainConfig(epochs=2 if quick else 100, batch_size=BATCH, lr=0.05, metrics=("trace_V",),
                        metric_epochs=(2 if quick else 100,), **kind)  # type: ignore[arg-type]
    return RunSpec(label(m, rho), data, "cnn1d", train, {"channels": 8 if quick else 64},
                   tags={"m": m, "rho": rho})


def _m_sharpness_cnn(mode: str) -> list[RunSpec]:
    runs = [_run(mode, None, 0.0)]
    if mode == "paper":
        runs += [_run(mode, m, rho) for m, rhos in GRID.items() for rho in rhos]
    else:
        ms = (8,) if mode == "standard" else (BATCH, 8)
        runs += [_run(mode, m, BEST_RHO[m]) for m in ms]
    return runs


register(Experiment(
    "m-sharpness-cnn",
    "m-SAM on a rho x m grid where SGD memorises noisy labels (MNIST-1D, 1-D CNN, 30 % noise)",
    _m_sharpness_cnn,
    {"quick": (0,), "standard": (0,), "paper": (0, 1, 2)},
    chapter="04_m_sharpness",
    notes="MNIST-1D first 2000 training samples, 30 % symmetric label noise ('other'), clean test set; "
          "cnn1d with 64 channels; batch 128, 100 epochs, SGD momentum 0.9, wd 5e-4, cosine lr 0.05; "
          "normalised m-SAM (vmap backend); tr V on the first 1000 training samples after the last "
          "epoch. Radii per m: GRID (paper mode, 3 seeds); standard mode trains SGD and m = 8 at BEST_RHO, "
          "seed 0.",
))


def _m_sweep(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    base: dict[str, Any] = dict(epochs=2 if quick else 20, batch_size=128, metrics=("trace_V", "sharpness"))
    ms = (128, 32) if quick else (128, 32, 16, 8)
    runs = [mlp_run("sgd", mode, TrainConfig(optimizer="sgd", **base), {"m": None, "rho": 0.0})]
    for m in ms:
        kind: dict[str, Any] = (
            dict(optimizer="sam") if m == base["batch_size"] else dict(optimizer="m-sam", m=m)
        )
        runs.append(
            mlp_run(
                "sam" if m == base["batch_size"] else f"m-sam-m{m}",
                mode,
                TrainConfig(rho=0.05, **kind, **base),
                {"m": m, "rho": 0.05},
            )
        )
    return runs


register(
    Experiment(
        "m-sweep",
        "m-SAM at rho=0.05 for m = 128 (SAM), 32, 16, 8, and SGD: accuracy, tr V, sharpness",
        _m_sweep,
        SEEDS,
        chapter="04_m_sharpness",
        cli_only="README's example of `sam-tutorial show`; chapter 4 runs m-sharpness-cnn, where SAM "
        "beats SGD (on this MLP the m-sweep is a null result)",
        notes="Standard mode: "
        "MNIST-1D, MLP 40-256-256-10, batch 128, 20 epochs; tr V and SAM sharpness (rho 0.05) on the "
        "first 1000 training samples after the last epoch. rho is the same for every m. This is normalised "
        "m-SAM, whose implicit penalty is rho E||grad f_I|| ~ rho sqrt(c_m tr V) near a minimum: "
        "it grows like sqrt(B/m) as m shrinks (rho c_m tr V / 2, i.e. rho/(2m) tr V with "
        "replacement, is m-USAM's; book ch. 3 section 7).",
    )
)


def _escape(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    init_epochs, epochs = (2, 2) if quick else (30, 10)
    init = TrainConfig(optimizer="sgd", epochs=init_epochs, weight_decay=0.0, lr=0.05)
    rho = 0.1
    base: dict[str, Any] = dict(
        epochs=epochs,
        lr=0.02,
        schedule="constant",
        weight_decay=0.0,
        metrics=("trace_V",),
        metric_epochs=tuple(range(epochs + 1)),
        eval_train=True,
    )
    phase2: dict[str, Any] = {
        "sgd": dict(optimizer="sgd"),
        "n-sam": dict(optimizer="n-sam", rho=rho, nsam_samples=1024),
        "sam": dict(optimizer="sam", rho=rho),
        "m-sam-m32": dict(optimizer="m-sam", rho=rho, m=32),
        "m-sam-m8": dict(optimizer="m-sam", rho=rho, m=8),
    }
    if quick:
        phase2.pop("m-sam-m8")
    runs = [mlp_run("sgd-init", mode, init, {"phase": "init"})]
    for label, kw in phase2.items():
        runs.append(
            mlp_run(
                label, mode, TrainConfig(**kw, **base), {"rho": kw.get("rho", 0.0)}, init_from="sgd-init"
            )
        )
    return runs


register(
    Experiment(
        "escape",
        "from an SGD solution: SGD, n-SAM, SAM, m-SAM (m=32, 8) and the decay of tr V per epoch",
        _escape,
        SEEDS,
        chapter="04_m_sharpness",
        cli_only="recorded in results/escape-standard.json, which chapter 6's scoreboard reads "
        "(reproduction.result_rows.escape_rows); chapter 4 shows controls-escape, the CNN's version",
        notes="Standard mode: "
        "Phase 1: SGD without weight decay, 30 epochs (cosine from 0.05). Phase 2 starts from its weights "
        "with a constant learning rate 0.02, rho 0.1, no weight decay, 10 epochs; tr V on the first 1000 "
        "training samples before phase 2 and after every epoch. n-SAM's full gradient is taken over the "
        "first 1024 training samples. A CPU analogue of the paper's Figs. 1-2 (whose setup is "
        "UNCONFIRMED).",
    )
)
