"""Named experiments: the chapters' figures and the paper's tables, each with a configuration per mode.

=================== ======== ==================================================================
experiment          chapter  what it runs
=================== ======== ==================================================================
``smoke``           --       SGD, SAM, m-SAM, RW-SAM for a few epochs on MNIST-1D
``m-sweep``         4        m-SAM at a fixed rho for m = B .. 8 (+ SGD): accuracy, tr V, sharpness
``escape``          4        from an SGD solution, SGD / n-SAM / SAM / m-SAM: tr V epoch by epoch
``rwsam``           5        SGD, SAM, m-SAM, RW-SAM: accuracy, tr V at the solution, time per epoch
``lambda``          5        RW-SAM over a grid of lambda (lambda = 0 is SAM)
``label-noise``     5        SGD, SAM, RW-SAM at 20-80 % symmetric label noise
``table1-*``        6        the paper's Table 1: ResNet-18/50, WRN-28-10 x CIFAR-10/100 x SGD/SAM/RW-SAM
``table4-noise*``   6        the paper's Table 4: label noise 20/40/60/80 %, ResNet-18, CIFAR-10
``table6-*``        6        the paper's Table 6: tr V at the solution, ResNet-18, CIFAR-10
=================== ======== ==================================================================

The chapter experiments use MNIST-1D and the MLP 40-256-256-10 of the CPU-scale probes (SGD with
momentum 0.9, weight decay 5e-4, cosine learning rate from 0.05, batch 128); ``paper`` mode runs
them as ``standard`` does. The ``table*`` experiments need CIFAR in the data folder and a GPU:
``paper`` mode is the paper's configuration (200 epochs), ``standard`` the same models and data for
10 epochs (a GPU check of minutes), ``quick`` a CPU-sized pipeline check (narrow models, 512 images,
1 epoch). Hyper-parameters the paper does not state are marked UNCONFIRMED in each experiment's
notes (``python -m sam_tutorial show NAME`` prints them).

>>> "smoke" in EXPERIMENTS and "table1-resnet18-cifar10" in EXPERIMENTS
True
>>> [s.label for s in get_experiment("smoke").runs("quick")]
['sgd', 'sam', 'msam-m16', 'rwsam']
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from sam_tutorial import config as cfg
from sam_tutorial.distributed import DistContext
from sam_tutorial.results import read_json
from sam_tutorial.runner import (
    DataSpec,
    Experiment,
    ExperimentResult,
    RunSpec,
    run_hash,
    run_one,
    run_path,
    runs_root,
)
from sam_tutorial.train import TrainConfig

EXPERIMENTS: dict[str, Experiment] = {}
"""Every named experiment, by name, in the order :func:`list_experiments` shows them."""


def register(exp: Experiment) -> Experiment:
    """Add an experiment to :data:`EXPERIMENTS` (names are unique)."""
    if exp.name in EXPERIMENTS:
        raise ValueError(f"an experiment named {exp.name!r} is already registered")
    EXPERIMENTS[exp.name] = exp
    return exp


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid names: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def list_experiments() -> list[tuple[str, str]]:
    """``(name, description)`` of every experiment."""
    return [(e.name, e.description) for e in EXPERIMENTS.values()]


def _resolve(name: str, mode: str | None, seeds: Iterable[int] | None) -> tuple[Experiment, str, list[int]]:
    exp = get_experiment(name)
    mode = cfg.mode() if mode is None else mode
    if mode not in cfg.MODES:
        raise ValueError(f"mode must be one of {', '.join(cfg.MODES)}; got {mode!r}")
    chosen = list(exp.seeds[mode]) if seeds is None else [int(s) for s in seeds]
    return exp, mode, chosen


def run_experiment(
    name: str,
    *,
    mode: str | None = None,
    seeds: Iterable[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    data_root: str | os.PathLike[str] | None = None,
    labels: Sequence[str] | None = None,
    dist: DistContext | None = None,
) -> ExperimentResult:
    """Run (or load from the cache) every run of an experiment for every seed.

    Args:
        name: an experiment name (see :data:`EXPERIMENTS`).
        mode: ``quick``, ``standard`` or ``paper`` (default: :func:`sam_tutorial.config.mode`).
        seeds: the seeds (default: the experiment's seeds for the mode).
        out: output folder (default: ``$SAM_TUTORIAL_RUNS`` or ``./runs``).
        device: where to train (default: :func:`sam_tutorial.config.device`).
        progress: show a progress bar per run.
        data_root: data folder (default: ``$SAM_TUTORIAL_DATA`` or the user cache folder).
        labels: run only these runs (default: all).
        dist: under torchrun, this process's :class:`~sam_tutorial.distributed.DistContext` (from
            :func:`sam_tutorial.distributed.init_from_env`); every rank calls this with the same
            arguments and trains its shard of each global batch, rank 0 alone writes the results, and
            every rank gets them back (see :mod:`sam_tutorial.runner`).

    Returns:
        The :class:`~sam_tutorial.runner.ExperimentResult`.

    Raises:
        ValueError: for an unknown experiment, mode or run label.
    """
    exp, mode, chosen = _resolve(name, mode, seeds)
    dev = cfg.device() if device is None else torch.device(device)
    specs = exp.runs(mode)
    by_label = {s.label: s for s in specs}
    if labels is not None:
        unknown = sorted(set(labels) - set(by_label))
        if unknown:
            raise ValueError(f"labels {unknown} are not runs of {name!r}; its runs: {', '.join(by_label)}")
    root = runs_root(out)
    records = [
        run_one(exp, mode, spec, seed, out=root, device=dev, progress=progress, data_root=data_root,
                specs=by_label, dist=dist)
        for spec in specs
        if labels is None or spec.label in labels
        for seed in chosen
    ]
    return ExperimentResult(exp, mode, records)


def load_results(
    name: str,
    *,
    mode: str | None = None,
    seeds: Iterable[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    world_size: int = 1,
) -> ExperimentResult:
    """The cached results of an experiment, without training anything; absent runs go to ``missing``.

    ``world_size > 1`` loads the results of runs trained by that many processes (torchrun).

    Raises:
        ValueError: for an unknown experiment or mode.
    """
    exp, mode, chosen = _resolve(name, mode, seeds)
    specs = exp.runs(mode)
    by_label = {s.label: s for s in specs}
    root = runs_root(out)
    records, missing = [], []
    for spec in specs:
        for seed in chosen:
            digest = run_hash(exp, mode, spec, seed, by_label, world_size)
            path = run_path(root, exp, mode, spec, seed, digest)
            if path.exists():
                records.append(read_json(path))
            else:
                missing.append((spec.label, seed))
    return ExperimentResult(exp, mode, records, missing)


# ============================================================================ chapter experiments
MLP = {"hidden": (256, 256)}
SEEDS = {"quick": (0,), "standard": (0, 1), "paper": (0, 1)}


def _mnist1d(mode: str, **noise: Any) -> DataSpec:
    """Quick mode keeps 1000 training and 500 test samples; the others the standard 4000 / 1000."""
    return DataSpec("mnist1d", 1000, 500, **noise) if mode == "quick" else DataSpec("mnist1d", **noise)


def _mlp_run(label: str, mode: str, train: TrainConfig, tags: dict[str, Any] | None = None,
             data: DataSpec | None = None, init_from: str | None = None) -> RunSpec:
    return RunSpec(label, data or _mnist1d(mode), "mlp", train, MLP, init_from, tags or {})


def _variants(rho: float, lam: float, delta: float, m: int) -> dict[str, dict[str, Any]]:
    """The optimizer settings the chapters compare (base settings added by the caller)."""
    return {
        "sgd": dict(optimizer="sgd"),
        "sam": dict(optimizer="sam", rho=rho),
        f"msam-m{m}": dict(optimizer="msam", rho=rho, m=m),
        "rwsam": dict(optimizer="rwsam", rho=rho, lam=lam, delta=delta),
    }


# RW-SAM on the MLP (78,858 parameters): a ±1 probe has norm 281, so delta = 3.5e-5 makes
# ||delta z|| ~ 0.01, the probe size suggested in reference/paper.md §5.3 (the paper's delta: UNCONFIRMED).
MLP_DELTA = 3.5e-5
MLP_LAM = 0.1


def _smoke(mode: str) -> list[RunSpec]:
    base = dict(epochs=2, batch_size=64) if mode == "quick" else dict(epochs=5, batch_size=128)
    m = 16
    return [
        _mlp_run(label, mode, TrainConfig(**kw, **base), {"optimizer": kw["optimizer"]})
        for label, kw in _variants(0.05, MLP_LAM, MLP_DELTA, m).items()
    ]


register(Experiment(
    "smoke", "tiny MNIST-1D run of SGD, SAM, m-SAM and RW-SAM (checks the whole pipeline)", _smoke,
    {"quick": (0,), "standard": (0,), "paper": (0,)},
))


def _m_sweep(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    base = dict(epochs=2 if quick else 20, batch_size=128, metrics=("trace_V", "sharpness"))
    ms = (128, 32) if quick else (128, 32, 16, 8)
    runs = [_mlp_run("sgd", mode, TrainConfig(optimizer="sgd", **base), {"m": None, "rho": 0.0})]
    for m in ms:
        kind = dict(optimizer="sam") if m == base["batch_size"] else dict(optimizer="msam", m=m)
        runs.append(_mlp_run(f"m{m}", mode, TrainConfig(rho=0.05, **kind, **base), {"m": m, "rho": 0.05}))
    return runs


register(Experiment(
    "m-sweep", "m-SAM at rho=0.05 for m = 128 (SAM), 32, 16, 8, and SGD: accuracy, tr V, sharpness",
    _m_sweep, SEEDS, chapter="04_m_sharpness",
    notes="Standard mode: "
          "MNIST-1D, MLP 40-256-256-10, batch 128, 20 epochs; tr V and SAM sharpness (rho 0.05) on the "
          "first 1000 training samples after the last epoch. rho is the same for every m, so the implicit "
          "penalty rho/(2m) tr V grows as m shrinks.",
))


def _escape(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    init_epochs, epochs = (2, 2) if quick else (30, 10)
    init = TrainConfig(optimizer="sgd", epochs=init_epochs, weight_decay=0.0, lr=0.05)
    rho = 0.1
    base = dict(epochs=epochs, lr=0.02, schedule="constant", weight_decay=0.0, metrics=("trace_V",),
                metric_epochs=tuple(range(epochs + 1)), eval_train=True)
    phase2 = {
        "sgd": dict(optimizer="sgd"),
        "nsam": dict(optimizer="nsam", rho=rho, nsam_samples=1024),
        "sam": dict(optimizer="sam", rho=rho),
        "msam-m32": dict(optimizer="msam", rho=rho, m=32),
        "msam-m8": dict(optimizer="msam", rho=rho, m=8),
    }
    if quick:
        phase2.pop("msam-m8")
    runs = [_mlp_run("init-sgd", mode, init, {"phase": "init"})]
    for label, kw in phase2.items():
        runs.append(_mlp_run(label, mode, TrainConfig(**kw, **base), {"rho": kw.get("rho", 0.0)},
                             init_from="init-sgd"))
    return runs


register(Experiment(
    "escape", "from an SGD solution: SGD, n-SAM, SAM, m-SAM (m=32, 8) and the decay of tr V per epoch",
    _escape, SEEDS, chapter="04_m_sharpness",
    notes="Standard mode: "
          "Phase 1: SGD without weight decay, 30 epochs (cosine from 0.05). Phase 2 starts from its weights "
          "with a constant learning rate 0.02, rho 0.1, no weight decay, 10 epochs; tr V on the first 1000 "
          "training samples before phase 2 and after every epoch. n-SAM's full gradient is taken over the "
          "first 1024 training samples. A CPU analogue of the paper's Figs. 1-2 (whose setup is "
          "UNCONFIRMED).",
))


def _rwsam(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    base = dict(epochs=2 if quick else 20, metrics=("trace_V",))
    return [
        _mlp_run(label, mode, TrainConfig(**kw, **base), {"optimizer": kw["optimizer"]})
        for label, kw in _variants(0.05, MLP_LAM, MLP_DELTA, 16).items()
    ]


register(Experiment(
    "rwsam", "SGD, SAM, m-SAM (m=16) and RW-SAM: accuracy, tr V at the solution, seconds per epoch",
    _rwsam, SEEDS, chapter="05_reweighted_sam",
    notes="Standard mode: "
          f"MNIST-1D, MLP, batch 128, rho 0.05, 20 epochs; RW-SAM lambda {MLP_LAM}, delta {MLP_DELTA} with a "
          "±1 Rademacher probe (||delta z|| ~ 0.01), uniform descent pass (the paper's lambda and delta: "
          "UNCONFIRMED). tr V on the first 1000 training samples after the last epoch (a CPU analogue of "
          "Table 6).",
))

LAMBDAS = (0.0, 0.03, 0.1, 0.3, 1.0)


def _lambda(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    base = dict(optimizer="rwsam", rho=0.05, delta=MLP_DELTA, epochs=2 if quick else 20, metrics=("trace_V",))
    lams = (0.0, 0.1) if quick else LAMBDAS
    return [_mlp_run(f"lam{lam:g}", mode, TrainConfig(lam=lam, **base), {"lam": lam}) for lam in lams]


register(Experiment(
    "lambda", "RW-SAM sensitivity to lambda (0 = SAM, 0.03, 0.1, 0.3, 1) on MNIST-1D: accuracy and tr V",
    _lambda, SEEDS, chapter="05_reweighted_sam",
    notes="Standard mode: "
          f"MNIST-1D, MLP, batch 128, rho 0.05, delta {MLP_DELTA}, 20 epochs. The paper's Table 5 grid is "
          "UNCONFIRMED.",
))

NOISE = (0.2, 0.4, 0.6, 0.8)


def _label_noise(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    levels = (0.4,) if quick else NOISE
    base = dict(epochs=2 if quick else 20)
    runs = []
    for noise in levels:
        for label, kw in _variants(0.05, MLP_LAM, MLP_DELTA, 16).items():
            if kw["optimizer"] == "msam":
                continue
            runs.append(_mlp_run(f"{label}-noise{round(noise * 100)}", mode, TrainConfig(**kw, **base),
                                 {"optimizer": label, "noise": noise}, _mnist1d(mode, label_noise=noise)))
    return runs


register(Experiment(
    "label-noise", "SGD, SAM and RW-SAM with 20, 40, 60, 80 % symmetric label noise on MNIST-1D",
    _label_noise, {"quick": (0,), "standard": (0,), "paper": (0, 1)}, chapter="05_reweighted_sam",
    notes="Standard mode: "
          "MNIST-1D, MLP, batch 128, rho 0.05, 20 epochs; each corrupted label moves to one of the other "
          "9 classes (exact rate; the paper's noise model is UNCONFIRMED). One seed in standard mode.",
))


# ============================================================================ paper configurations
PAPER_NOTES = (
    "Paper values: Table 1 of Luo et al. (NeurIPS 2025). Assumed (UNCONFIRMED, following EigenSAM and "
    "common SAM practice): 200 epochs, batch 128, SGD momentum 0.9, weight decay 5e-4, cosine learning "
    "rate from 0.1 stepped every iteration, random crop (padding 4) + horizontal flip, BatchNorm, "
    "rho 0.05 (CIFAR-10) / 0.1 (CIFAR-100), RW-SAM lambda 0.1 (as in the chapters) and a ±1 probe of "
    "norm ~0.01 "
    "(delta = 0.01 / sqrt(#parameters)), uniform descent pass, 3 seeds. 'standard' mode: 10 epochs; "
    "'quick': width-8 models, 512 images, 1 epoch."
)
PAPER_MODELS = {  # name -> (parameters with 10 classes, quick-mode stand-in)
    "resnet18": (11_173_962, ("resnet18", {"width": 8})),
    "resnet50": (23_520_842, ("resnet50", {"width": 8})),
    "wrn28-10": (36_479_194, ("wrn", {"depth": 10, "widen_factor": 1})),
}


def _paper_runs(model: str, dataset: str, mode: str, noise: float = 0.0, metrics: tuple[str, ...] = (),
                variants: Sequence[str] = ("sgd", "sam", "rwsam")) -> list[RunSpec]:
    params, (quick_model, quick_options) = PAPER_MODELS[model]
    rho = 0.05 if dataset == "cifar10" else 0.1
    epochs = {"quick": 1, "standard": 10, "paper": 200}[mode]
    n = 512 if mode == "quick" else None
    data = DataSpec(dataset, n, n, label_noise=noise)
    name, options = (quick_model, quick_options) if mode == "quick" else (model, {})
    base = dict(epochs=epochs, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, augment=True,
                eval_train=False, metrics=metrics, metric_samples=1000)
    delta = float(f"{0.01 / params ** 0.5:.2g}")
    settings = {
        "sgd": dict(optimizer="sgd"),
        "sam": dict(optimizer="sam", rho=rho),
        "rwsam": dict(optimizer="rwsam", rho=rho, lam=0.1, delta=delta),
    }
    suffix = f"-noise{round(noise * 100)}" if noise else ""
    return [
        RunSpec(f"{v}{suffix}", data, name, TrainConfig(**settings[v], **base), options, None,
                {"optimizer": v, "model": model, "dataset": dataset, **({"noise": noise} if noise else {})})
        for v in variants
    ]


PAPER_SEEDS = {"quick": (0,), "standard": (0,), "paper": (0, 1, 2)}
TABLE1 = {
    ("resnet18", "cifar10"): (95.62, 95.99, 96.24), ("resnet50", "cifar10"): (95.64, 96.06, 96.34),
    ("wrn28-10", "cifar10"): (96.47, 96.91, 97.11), ("resnet18", "cifar100"): (78.91, 78.90, 79.31),
    ("resnet50", "cifar100"): (79.55, 80.31, 80.83), ("wrn28-10", "cifar100"): (81.55, 83.25, 83.52),
}
for (_model, _data), _paper in TABLE1.items():
    register(Experiment(
        f"table1-{_model}-{_data}",
        f"paper Table 1: {_model} on {_data.upper()}, SGD / SAM / RW-SAM (paper: {_paper[0]} / {_paper[1]} / "
        f"{_paper[2]} %)",
        lambda mode, _m=_model, _d=_data: _paper_runs(_m, _d, mode), PAPER_SEEDS, "06_reproduction",
        PAPER_NOTES,
    ))

TABLE4 = {0.2: (87.54, 90.01, 90.34), 0.4: (83.66, 86.40, 86.87), 0.6: (76.64, 78.79, 81.52),
          0.8: (46.53, 37.69, 53.17)}
for _noise, _paper in TABLE4.items():
    register(Experiment(
        f"table4-noise{round(_noise * 100)}",
        f"paper Table 4: {round(_noise * 100)} % label noise, ResNet-18 on CIFAR-10, SGD / SAM / RW-SAM "
        f"(paper: {_paper[0]} / {_paper[1]} / {_paper[2]} %)",
        lambda mode, _n=_noise: _paper_runs("resnet18", "cifar10", mode, noise=_n), PAPER_SEEDS,
        "06_reproduction",
        PAPER_NOTES + " Table 4's model and data set (ResNet-18, CIFAR-10) and its noise model (a corrupted "
        "label moves to one of the other classes) are UNCONFIRMED.",
    ))

register(Experiment(
    "table6-resnet18-cifar10",
    "paper Table 6: tr V at the solution, ResNet-18 on CIFAR-10 (paper: SGD 572.39, SAM 198.40, "
    "RW-SAM 177.79)",
    lambda mode: _paper_runs("resnet18", "cifar10", mode, metrics=("trace_V",)), PAPER_SEEDS,
    "06_reproduction",
    PAPER_NOTES + " Table 6's model, data set and the samples tr V is computed on are UNCONFIRMED; here: "
    "ResNet-18, CIFAR-10, the first 1000 training samples (eval mode) after the last epoch.",
))
