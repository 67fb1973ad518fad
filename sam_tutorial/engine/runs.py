"""Running named experiments: run specifications, the result cache, and tables of results.

An :class:`Experiment` is a set of :class:`RunSpec` per mode (``quick``, ``standard``, ``paper``) and
seeds per mode. Each (run, seed) is trained by :func:`sam_tutorial.engine.train.fit` and stored as one JSON
file under the output folder::

    <out>/<experiment>/<mode>/<label>-seed<seed>-<hash>.json   the result (config, metrics, history, ...)
    <out>/<experiment>/<mode>/<label>-seed<seed>-<hash>.pt     the last checkpoint (the trained weights)
    <out>/<experiment>/<mode>/<label>-seed<seed>-<hash>.lock   serialises processes running this run

``<hash>`` hashes the experiment's name, the mode, the seed, the whole run specification and, for a
run that starts from another run's weights (``init_from``), that run's hash. A result whose file
exists is served from the cache; a run whose checkpoint exists resumes from it; a second process on
the same run waits for the first and then reads its result.

Under torchrun (``ctx=`` with ``world_size > 1``) every rank trains its shard of the same global
batches (:func:`sam_tutorial.engine.train.fit`); only rank 0 reads and writes the result, the checkpoint
and the lock, and it broadcasts its decisions and the result to the other ranks (which only read
the checkpoint, to resume). Such a run records ``"distributed": {"world_size": N, "scope": ...}`` in
its ``config``, and the hash covers it, so it never shares a cache entry with a single-process run.
"""


from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam_tutorial import config as cfg
from sam_tutorial.engine.data import load_dataset
from sam_tutorial.engine.distributed import DistContext
from sam_tutorial.engine.models import build_model
from sam_tutorial.engine.provenance import versions
from sam_tutorial.engine.storage import (
    ResultFileError,
    config_hash,
    load_checkpoint,
    read_json,
    run_lock,
    write_json,
)
from sam_tutorial.engine.train import fit
from sam_tutorial.engine.train_config import TrainConfig
from sam_tutorial.stats import sample_std

__all__ = [
    "DataSpec",
    "Experiment",
    "ExperimentResult",
    "RESULT_FORMAT",
    "RUNS_ENV",
    "RunSpec",
    "RECORD_KEYS",
    "TABLE_KEYS",
    "check_record",
    "run_hash",
    "run_one",
    "run_path",
    "runs_root",
    "versions",
]


RESULT_FORMAT = "sam_tutorial.result/1"


TABLE_KEYS = ("train_acc", "train_acc_clean", "test_acc", "test_loss", "trace_V", "sharpness")
"""Final metrics :meth:`ExperimentResult.table` shows, where the records have them."""


RUNS_ENV = "SAM_TUTORIAL_RUNS"


@dataclass(frozen=True)
class DataSpec:
    """Which data a run trains on (arguments of :func:`sam_tutorial.engine.data.load_dataset`)."""

    name: str
    n_train: int | None = None
    n_test: int | None = None
    label_noise: float = 0.0
    label_noise_kind: str = "other"


@dataclass(frozen=True)
class RunSpec:
    """One training run of an experiment, for any seed.

    Attributes:
        label: the run's name inside its experiment (e.g. ``"m-sam-m32"``).
        data: the data set.
        model: a name from :data:`sam_tutorial.engine.models.MODELS`.
        train: the training configuration.
        model_options: keyword options of the model (``hidden``, ``width``, ``norm`` ...).
        init_from: label of a run of the same experiment whose final weights start this run.
        tags: values shown as columns in tables (e.g. ``{"m": 32, "rho": 0.05}``).
    """

    label: str
    data: DataSpec
    model: str
    train: TrainConfig
    model_options: Mapping[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self, world_size: int = 1) -> dict[str, Any]:
        """A JSON-able description of the run (what the cache key hashes).

        With ``world_size > 1`` (a torchrun run) it adds
        ``"distributed": {"world_size": ..., "scope": train.scope}``.
        """
        out = {
            "label": self.label,
            "data": vars(self.data).copy(),
            "model": self.model,
            "model_options": dict(self.model_options),
            "train": self.train.to_dict(),
            "init_from": self.init_from,
            "tags": dict(self.tags),
        }
        if world_size > 1:
            out["distributed"] = {"world_size": world_size, "scope": self.train.scope}
        return out


@dataclass(frozen=True)
class Experiment:
    """A named experiment: its runs and seeds for each mode.

    Attributes:
        name: the name used by the CLI and :func:`sam_tutorial.engine.experiments.run_experiment`.
        description: one line.
        build: ``build(mode) -> runs`` for ``mode`` in ``quick``, ``standard``, ``paper``.
        seeds: the seeds per mode.
        chapter: the book chapter (notebook name without ``.ipynb``) it belongs to (``""``: none).
        notes: what the configuration assumes (UNCONFIRMED hyper-parameters are named here).
        cli_only: why no chapter runs or loads it (``""``: a chapter does; a test holds the chapter's
            notebook to naming it).
    """

    name: str
    description: str
    build: Callable[[str], Sequence[RunSpec]]
    seeds: Mapping[str, tuple[int, ...]]
    chapter: str = ""
    notes: str = ""
    cli_only: str = ""

    def runs(self, mode: str) -> list[RunSpec]:
        """The runs of ``mode``, checked: unique labels, ``init_from`` naming an earlier run.

        Raises:
            ValueError: for an unknown mode or an inconsistent run list.
        """
        if mode not in cfg.MODES:
            raise ValueError(f"mode must be one of {', '.join(cfg.MODES)}; got {mode!r}")
        specs = list(self.build(mode))
        seen: set[str] = set()
        for spec in specs:
            if spec.label in seen:
                raise ValueError(f"experiment {self.name!r}: run label {spec.label!r} is used twice")
            if spec.init_from is not None and spec.init_from not in seen:
                raise ValueError(
                    f"experiment {self.name!r}: run {spec.label!r} starts from {spec.init_from!r}, which is "
                    "not an earlier run of the experiment"
                )
            seen.add(spec.label)
        return specs


def runs_root(out: str | os.PathLike[str] | None = None, *, name: str = "out") -> Path:
    """The output folder: ``out``, else ``$SAM_TUTORIAL_RUNS``, else ``runs`` in the working directory.

    ``name`` is what messages call ``out`` (the command line passes ``"--out"``).

    Raises:
        ValueError: for an empty ``out`` (it would mean the working directory itself) or one that is an
            existing file.
    """
    if out is not None:
        if not isinstance(out, str | os.PathLike) or not str(os.fspath(out)).strip():
            raise ValueError(f"{name} {out!r} names no folder (an empty one would write into the current "
                             f"folder); {name} must be a folder path (default: ${RUNS_ENV} or ./runs)")
        root = Path(out).expanduser()
    else:
        env = os.environ.get(RUNS_ENV, "").strip()
        root = Path(env).expanduser() if env else Path("runs")
    if root.exists() and not root.is_dir():
        raise ValueError(f"the output folder {root} is a file; choose a folder (out= or ${RUNS_ENV})")
    return root


def run_hash(
    exp: Experiment, mode: str, spec: RunSpec, seed: int, specs: Mapping[str, RunSpec], world_size: int = 1
) -> str:
    """The cache key of one (run, seed): covers the experiment, mode, seed, spec and its init run, and
    the number of processes when it is more than one."""
    init = None if spec.init_from is None else run_hash(
        exp, mode, specs[spec.init_from], seed, specs, world_size)
    return config_hash({
        "format": RESULT_FORMAT, "experiment": exp.name, "mode": mode, "seed": seed,
        "run": spec.to_dict(world_size), "init": init,
    })


def run_path(out: Path, exp: Experiment, mode: str, spec: RunSpec, seed: int, digest: str) -> Path:
    """The result file of one (run, seed); the checkpoint and lock share its stem."""
    return out / exp.name / mode / f"{spec.label}-seed{seed}-{digest}.json"


def run_one(
    exp: Experiment,
    mode: str,
    spec: RunSpec,
    seed: int,
    *,
    out: Path,
    device: torch.device,
    progress: bool = False,
    data_root: str | os.PathLike[str] | None = None,
    specs: Mapping[str, RunSpec] | None = None,
    ctx: DistContext | None = None,
) -> dict[str, Any]:
    """Return the result of one (run, seed): from the cache, else by training (resuming if possible).

    Args:
        exp: the experiment.
        mode: the mode whose runs ``spec`` belongs to.
        spec: the run.
        seed: seeds the model's initialisation, the label noise, the data order and RW-SAM's probes.
        out: the output folder.
        device: where to train.
        progress: show a progress bar.
        data_root: data folder (see :func:`sam_tutorial.engine.data.data_root`).
        specs: the experiment's runs by label (for ``init_from``; default: ``exp.runs(mode)``).
        ctx: this process's place under torchrun (the process group initialised); every rank calls
            this with the same arguments and gets the same record back (see the module docstring).

    Returns:
        The result record (what the JSON file holds).
    """
    specs = specs if specs is not None else {s.label: s for s in exp.runs(mode)}
    world = ctx.world_size if ctx is not None else 1
    main = ctx is None or ctx.is_main
    digest = run_hash(exp, mode, spec, seed, specs, world)
    path = run_path(out, exp, mode, spec, seed, digest)
    expected = {"experiment": exp.name, "mode": mode, "label": spec.label, "seed": seed}
    cached = _from_main(_cached(path, digest, expected) if main else None, ctx)
    if cached is not None:
        return cached
    lock: AbstractContextManager[None] = run_lock(path.with_suffix(".lock")) if main else nullcontext()
    with lock:
        # another process may have finished it while we waited
        cached = _from_main(_cached(path, digest, expected) if main else None, ctx)
        if cached is not None:
            return cached
        init_state = None
        if spec.init_from is not None:
            parent = specs[spec.init_from]
            run_one(exp, mode, parent, seed, out=out, device=device, progress=progress,
                    data_root=data_root, specs=specs, ctx=ctx)
            parent_ckpt = run_path(out, exp, mode, parent, seed,
                                   run_hash(exp, mode, parent, seed, specs, world))
            init_state = load_checkpoint(parent_ckpt.with_suffix(".pt"), None)["model"]
        d = spec.data
        data = load_dataset(d.name, data_root, d.label_noise, seed, n_train=d.n_train, n_test=d.n_test,
                            label_noise_kind=d.label_noise_kind)
        cfg.seed_everything(seed)
        model = build_model(spec.model, num_classes=data.num_classes, input_shape=data.input_shape,
                            **dict(spec.model_options))
        started = time.perf_counter()
        result = fit(model, data, spec.train, seed=seed, device=device, checkpoint=path.with_suffix(".pt"),
                     fingerprint=digest, progress=progress, desc=f"{exp.name}/{spec.label} s{seed}",
                     init_state=init_state, ctx=ctx)
        if not main:
            return _from_main(None, ctx)
        seconds = result.history["seconds"]
        record = {
            "format": RESULT_FORMAT, "experiment": exp.name, "mode": mode, "label": spec.label,
            "seed": seed, "config_hash": digest, "tags": dict(spec.tags), "config": spec.to_dict(world),
            "metrics": result.final, "history": result.history,
            "timing": {"seconds_per_epoch": statistics.fmean(seconds) if seconds else None,
                       "seconds_this_call": time.perf_counter() - started},
            "provenance": {"resumed_from_epoch": result.resumed_from, "device": str(device),
                           "data": data.info, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "versions": versions(),
        }
        write_json(path, record)
        # the cached form (lists, not tuples), so fresh and cached results are equal
        return _from_main(read_json(path), ctx)


def _from_main(value: Any, ctx: DistContext | None) -> Any:
    """``value`` as rank 0 has it, on every rank (a broadcast under torchrun; else ``value`` itself)."""
    if ctx is None or not ctx.distributed:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _cached(path: Path, digest: str, expected: Mapping[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except ValueError:
        return None  # unreadable: recompute (the atomic writer never leaves one, a person might)
    if record.get("config_hash") != digest or record.get("format") != RESULT_FORMAT:
        return None
    return check_record(path, record, expected)


RECORD_KEYS: dict[str, type] = {
    "format": str, "experiment": str, "mode": str, "label": str, "seed": int, "config_hash": str,
    "config": dict, "metrics": dict, "history": dict, "timing": dict,
}
"""What every result file holds (with its JSON type); tables and chapters read these."""


def check_record(path: str | os.PathLike[str], record: dict[str, Any],
                 expected: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``record`` if it has every key of :data:`RECORD_KEYS` with its type (and ``timing`` its
    ``seconds_per_epoch``), every final metric is a number or null, and -- when ``expected`` is given
    (``experiment``, ``mode``, ``label``, ``seed`` of the run the file's name and hash stand for) -- it
    says it is that run: a label edited by hand would otherwise be averaged into another run's row.

    Raises:
        ResultFileError: naming ``path``, the missing, mistyped or contradicting keys, and what to do.
    """
    bad = [k for k, kind in RECORD_KEYS.items()
           if not isinstance(record.get(k), kind) or (kind is int and isinstance(record.get(k), bool))]
    if not bad and "seconds_per_epoch" not in record["timing"]:
        bad = ["timing.seconds_per_epoch"]
    if not bad:
        bad = [f"metrics.{k}" for k, v in record["metrics"].items()
               if v is not None and (isinstance(v, bool) or not isinstance(v, int | float))]
    contradicts = [f"{k}={record.get(k)!r} (the run is {v!r})" for k, v in (expected or {}).items()
                   if not bad and record.get(k) != v]
    if bad or contradicts:
        exp, mode = record.get("experiment", "NAME"), record.get("mode", "MODE")
        if expected:
            exp, mode = expected.get("experiment", exp), expected.get("mode", mode)
        what = (f"lacks {bad} (or holds another type there)" if bad else
                f"says {', '.join(contradicts)}")
        raise ResultFileError(
            f"the result file {path} {what}; it was edited or written by another version. Delete it and "
            f"recompute it with `python -m sam_tutorial run {exp} --mode {mode}`."
        )
    return record


@dataclass
class ExperimentResult:
    """The results of an experiment in one mode: one record per (run, seed).

    Attributes:
        experiment: the experiment.
        mode: the mode.
        records: result records, in run order then seed order.
        missing: ``(label, seed)`` pairs without a cached result (only from ``load_results``).
    """

    experiment: Experiment
    mode: str
    records: list[dict[str, Any]]
    missing: list[tuple[str, int]] = field(default_factory=list)

    def labels(self) -> list[str]:
        """Run labels that have at least one record, in run order."""
        return list(dict.fromkeys(r["label"] for r in self.records))

    def select(self, label: str) -> list[dict[str, Any]]:
        """The records of one run (one per seed)."""
        return [r for r in self.records if r["label"] == label]

    def curves(self, key: str) -> dict[str, np.ndarray]:
        """Per run, ``history[key]`` stacked over seeds: ``[seeds, epochs]``."""
        return {
            label: np.array([r["history"][key] for r in self.select(label)], dtype=float)
            for label in self.labels()
        }

    def metric_curves(self, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per run, ``(epochs, values[seeds, len(epochs)])`` of a metric such as ``"trace_V"``."""
        out = {}
        for label in self.labels():
            recs = [r for r in self.select(label) if name in r["history"]["metrics"]]
            if recs:
                epochs = np.array(recs[0]["history"]["metrics"]["epoch"])
                out[label] = (epochs, np.array([r["history"]["metrics"][name] for r in recs], dtype=float))
        return out

    def summary(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """One row per run: tags, number of seeds, and mean/sample std over seeds of final metrics
        (:func:`sam_tutorial.stats.sample_std`, the book's one convention).

        Args:
            keys: final metrics to summarise (default: every metric the records have).
        """
        rows = []
        for label in self.labels():
            recs = self.select(label)
            names = list(keys) if keys is not None else list(dict.fromkeys(
                k for r in recs for k, v in r["metrics"].items() if isinstance(v, int | float)))
            row: dict[str, Any] = {"label": label, **recs[0].get("tags", {}), "seeds": len(recs)}
            for k in names:
                vals = [float(r["metrics"][k]) for r in recs if r["metrics"].get(k) is not None]
                row[k] = statistics.fmean(vals) if vals else None
                row[f"{k}_std"] = sample_std(vals) if vals else None  # ddof = 1; nan for one seed
            times = [r["timing"]["seconds_per_epoch"] for r in recs if r["timing"]["seconds_per_epoch"]]
            row["s/epoch"] = statistics.fmean(times) if times else None
            rows.append(row)
        return rows

    def table(self, keys: Sequence[str] = TABLE_KEYS) -> str:
        """A plain-text table of :meth:`summary` (mean ± std over seeds)."""
        rows = self.summary()
        shown = [k for k in keys if any(r.get(k) is not None for r in rows)]
        header = ["run", "seeds", *shown, "s/epoch"]
        lines = []
        for r in rows:
            cells = [r["label"], str(r["seeds"])]
            for k in shown:
                v, s = r.get(k), r.get(f"{k}_std")
                cells.append("-" if v is None else f"{v:.4g} ± {s:.2g}" if r["seeds"] > 1 else f"{v:.4g}")
            cells.append("-" if r["s/epoch"] is None else f"{r['s/epoch']:.3g}")
            lines.append(cells)
        widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return "\n".join(fmt.format(*row) for row in [header, ["-" * w for w in widths], *lines])
