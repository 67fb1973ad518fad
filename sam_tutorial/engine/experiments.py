"""Named experiments: the chapters' figures and the paper's tables, each with a configuration per mode.

=================== ======== ==================================================================
experiment          chapter  what it runs
=================== ======== ==================================================================
``smoke``           (CLI)    SGD, SAM, m-SAM, RW-SAM for a few epochs on MNIST-1D
``m-sweep``         (CLI)    m-SAM at a fixed rho for m = B .. 8 (+ SGD) on the MLP: a null result
``m-sharpness-cnn`` 4        m-SAM on a rho x m grid, 1-D CNN, 30 % label noise (recorded)
``escape``          (CLI)    from an SGD solution, SGD / n-SAM / SAM / m-SAM: tr V epoch by epoch
``rw-compare``      5        SGD, SAM, RW-SAM {uniform, weighted} x {fd, exact score}
``rw-study-*``      5        the recorded study: ``compare`` (rho-tuned, m-SAM, exact norms),
                             ``lambda`` (lambda sweep), ``noise`` (20-60 % label noise)
``controls-*``      4, 5     the CNN's memorising setting: label-noise and escape controls
``table1-*``        6        the paper's Table 1: ResNet-18/50, WRN-28-10 x CIFAR-10/100 x SGD/SAM/RW-SAM
``table4-noise*``   6        the paper's Table 4: label noise 20/40/60/80 %, ResNet-18, CIFAR-10
``table6-*``        6        the paper's Table 6: tr V at the solution, ResNet-18, CIFAR-10
=================== ======== ==================================================================

The catalogue (:mod:`sam_tutorial.engine.catalog`, one module per part of the book) registers them in
``EXPERIMENTS`` (:mod:`sam_tutorial.engine.catalog.registry`) when this module is imported.
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
['sgd', 'sam', 'm-sam-m16', 'rw-sam']
"""


from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch

from sam_tutorial import config as cfg
from sam_tutorial.engine import catalog  # noqa: F401  (importing the catalogue registers every experiment)
from sam_tutorial.engine.catalog.registry import EXPERIMENTS, get_experiment, list_experiments, register
from sam_tutorial.engine.distributed import DistContext
from sam_tutorial.engine.runs import (
    Experiment,
    ExperimentResult,
    check_record,
    run_hash,
    run_one,
    run_path,
    runs_root,
)
from sam_tutorial.engine.storage import read_json

__all__ = ["EXPERIMENTS", "get_experiment", "list_experiments", "load_results", "register", "run_experiment"]


def _resolve(name: str, mode: str | None, seeds: Iterable[int] | None) -> tuple[Experiment, str, list[int]]:
    exp = get_experiment(name)
    mode = cfg.mode() if mode is None else mode
    if mode not in cfg.MODES:
        raise ValueError(f"mode must be one of {', '.join(cfg.MODES)}; got {mode!r}")
    if seeds is not None and (isinstance(seeds, str | bytes | int) or not isinstance(seeds, Iterable)):
        raise ValueError(f"seeds must be a list of integers in [0, 2**32), got {seeds!r}")
    chosen = list(exp.seeds[mode]) if seeds is None else [cfg.check_seed("seeds entries", s) for s in seeds]
    if not chosen:
        raise cfg.UserError("seeds=[] names no seed: give at least one, or seeds=None for the experiment's "
                            f"seeds in {mode} mode ({list(exp.seeds[mode])})")
    repeated = sorted({s for s in chosen if chosen.count(s) > 1})
    if repeated:
        raise cfg.UserError(f"seeds repeats {repeated}: a seed counts once in every mean; give each seed "
                            "once")
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
    ctx: DistContext | None = None,
) -> ExperimentResult:
    """Run (or load from the cache) every run of an experiment for every seed.

    Args:
        name: an experiment name (see ``registry.EXPERIMENTS``).
        mode: ``quick``, ``standard`` or ``paper`` (default: :func:`sam_tutorial.config.mode`).
        seeds: the seeds (default: the experiment's seeds for the mode).
        out: output folder (default: ``$SAM_TUTORIAL_RUNS`` or ``./runs``).
        device: where to train (default: :func:`sam_tutorial.config.device`).
        progress: show a progress bar per run.
        data_root: data folder (default: ``$SAM_TUTORIAL_DATA`` or the user cache folder).
        labels: run only these runs (default: all).
        ctx: under torchrun, this process's :class:`~sam_tutorial.engine.distributed.DistContext` (from
            :func:`sam_tutorial.engine.distributed.init_from_env`); every rank calls this with the same
            arguments and trains its shard of each global batch, rank 0 alone writes the results, and
            every rank gets them back (see :mod:`sam_tutorial.engine.runs`).

    Returns:
        The :class:`~sam_tutorial.engine.runs.ExperimentResult`.

    Raises:
        ValueError: for an unknown experiment, mode or run label, a seed outside ``[0, 2**32)``, a device
            this machine does not have, or an empty ``out``; all before any file is written.
    """
    exp, mode, chosen = _resolve(name, mode, seeds)
    dev = cfg.device() if device is None else cfg.check_device("device", device)
    specs = exp.runs(mode)
    by_label = {s.label: s for s in specs}
    if labels is not None:
        unknown = sorted(set(labels) - set(by_label))
        if unknown:
            raise ValueError(f"labels {unknown} are not runs of {name!r}; its runs: {', '.join(by_label)}")
    root = runs_root(out)
    records = [
        run_one(exp, mode, spec, seed, out=root, device=dev, progress=progress, data_root=data_root,
                specs=by_label, ctx=ctx)
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
                expected = {"experiment": exp.name, "mode": mode, "label": spec.label, "seed": seed}
                records.append(check_record(path, read_json(path), expected))
            else:
                missing.append((spec.label, seed))
    return ExperimentResult(exp, mode, records, missing)

