"""Many runs on many GPUs: every (run, seed) of an experiment handed to a job system through submitit
(Slurm, or local processes), results gathered from the shared runs folder (book chapter 6).

.. code-block:: text

    sam-tutorial run msweep-resnet18-cifar10 --mode paper --launcher submitit-slurm \\
        --out $SCRATCH/runs --launcher-option slurm_partition=gpu --launcher-option timeout_min=720
    sam-tutorial run smoke --mode quick --launcher submitit-local --out runs   # local processes
    sam-tutorial show msweep-resnet18-cifar10 --mode paper --out $SCRATCH/runs  # gather, any time

Nothing here schedules: submitit submits one job per (run, seed) not already cached (a Slurm job array),
Slurm or the local executor runs them. Each job calls :func:`sam_tutorial.engine.runs.run_one`, so the
result cache, the per-epoch checkpoints and the lock of a run work as for ``sam-tutorial run``: a job
pre-empted or timed out receives submitit's signal, :meth:`RunJob.checkpoint` asks for the same job
again, and the requeued job resumes from the run's own last checkpoint (its ``provenance`` records
``resumed_from_epoch``); a result already there is served, not recomputed. The runs folder must be
shared by the nodes (with POSIX ``flock`` locks, which Lustre and NFSv4 provide).

**One run on several GPUs.** ``gpus_per_run = N`` asks for N tasks with one GPU each; inside the job
submitit's ``submitit.helpers.TorchDistributedEnvironment`` exports the variables torchrun would
set, and the run trains under DDP exactly as under ``torchrun --nproc_per_node N`` (its cache key
records the world size; the perturbation scope is the configuration's).

**Runs that start from another run** (``init_from``, e.g. the escape protocol) are submitted after
their parents: wave by wave when waiting for the jobs, and with a Slurm dependency (``afterok``) when
not (``wait=False``, Slurm only).

Requires the ``cluster`` extra (``pip install sam_tutorial[cluster]``: submitit).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam_tutorial import config as cfg
from sam_tutorial.engine.runs import Experiment, ExperimentResult, RunSpec, run_hash, run_one, run_path

__all__ = ["LAUNCHERS", "Launch", "RunJob", "gather", "launch", "parse_options"]

LAUNCHERS: dict[str, str] = {"submitit-slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}
"""``--launcher`` values and the submitit cluster each uses (``debug`` runs the jobs in this process)."""


def _submitit() -> Any:
    """submitit, or a :class:`~sam_tutorial.config.MissingExtra` naming the ``cluster`` extra."""
    return cfg.require("submitit", "cluster")


class RunJob:
    """One (run, seed) as a submitit job: calling it trains the run (or loads its cached result);
    :meth:`checkpoint` is submitit's pre-emption hook and requeues the same job.

    Args:
        exp: the experiment (pickled with the job, so experiments defined outside the catalogue work).
        mode: the mode.
        label: the run's label.
        seed: the seed.
        out: the shared runs folder.
        device: ``"cuda"``, ``"cpu"`` ... (with several tasks each takes the GPU of its local rank).
        data_root: the data folder on the nodes.
    """

    def __init__(self, exp: Experiment, mode: str, label: str, seed: int, out: str | os.PathLike[str],
                 device: str, data_root: str | os.PathLike[str] | None = None) -> None:
        self.exp, self.mode, self.label, self.seed = exp, mode, label, seed
        self.out, self.device, self.data_root = str(out), device, data_root
        self.attempt = 0

    def __call__(self) -> dict[str, Any]:
        """Train (or load) the run; return its label, seed, hash, result path and resumed epoch."""
        from sam_tutorial.engine import distributed

        submitit = _submitit()
        ctx = None
        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            ctx = distributed.init_from_env(device=cfg.check_device("device", self.device).type)
        device = ctx.device if ctx is not None else cfg.check_device("device", self.device)
        specs = {s.label: s for s in self.exp.runs(self.mode)}
        try:
            record = run_one(self.exp, self.mode, specs[self.label], self.seed, out=Path(self.out),
                             device=device, data_root=self.data_root, specs=specs, ctx=ctx)
        finally:
            if ctx is not None:
                distributed.destroy()
        world = ctx.world_size if ctx is not None else 1
        digest = run_hash(self.exp, self.mode, specs[self.label], self.seed, specs, world)
        path = run_path(Path(self.out), self.exp, self.mode, specs[self.label], self.seed, digest)
        return {"label": self.label, "seed": self.seed, "config_hash": record["config_hash"],
                "path": str(path), "resumed_from_epoch": record["provenance"]["resumed_from_epoch"],
                "attempt": self.attempt}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Submitit's pre-emption / time-out hook: requeue this job. Nothing needs saving here: the run
        checkpoints itself after every epoch (atomically), and the requeued job resumes from there."""
        self.attempt += 1
        return _submitit().helpers.DelayedSubmission(self)


@dataclass
class Launch:
    """What :func:`launch` did: the jobs it submitted (``(label, seed) -> job``), those it skipped as
    cached, the failures (``(label, seed) -> message``) and, when it waited, the gathered results."""

    jobs: dict[tuple[str, int], Any] = field(default_factory=dict)
    cached: list[tuple[str, int]] = field(default_factory=list)
    failed: dict[tuple[str, int], str] = field(default_factory=dict)
    outputs: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    result: ExperimentResult | None = None
    folder: Path | None = None


def parse_options(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as submitit parameters; integers, floats, ``true``/``false`` are converted.

    Raises:
        ValueError: for an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--launcher-option {item!r} must be KEY=VALUE, e.g. slurm_partition=gpu or "
                             "timeout_min=720")
        value: Any = raw
        for convert in (int, float):
            try:
                value = convert(raw)
                break
            except ValueError:
                continue
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        out[key.strip()] = value
    return out


def _waves(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """The runs grouped by the length of their ``init_from`` chain (parents before children)."""
    by_label = {s.label: s for s in specs}

    def depth(spec: RunSpec) -> int:
        return 0 if spec.init_from is None else 1 + depth(by_label[spec.init_from])

    waves: dict[int, list[RunSpec]] = {}
    for spec in specs:
        waves.setdefault(depth(spec), []).append(spec)
    return [waves[d] for d in sorted(waves)]


def launch(
    name: str,
    *,
    launcher: str,
    mode: str | None = None,
    seeds: Iterable[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    device: str = "cuda",
    data_root: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    gpus_per_run: int = 1,
    wait: bool = True,
    experiment: Experiment | None = None,
    job: type[RunJob] | None = None,
    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Launch:
    """Submit every (run, seed) of an experiment that is not cached, one job each.

    Args:
        name: an experiment of the catalogue (``experiment`` given: its name, for messages).
        launcher: one of :data:`LAUNCHERS`.
        mode, seeds, out, data_root: as for :func:`sam_tutorial.engine.experiments.run_experiment`.
        device: the device each job trains on (default ``cuda``; checked on the nodes, so a login node
            without a GPU can submit).
        options: submitit parameters (``timeout_min``, ``slurm_partition``, ``cpus_per_task`` ...).
        gpus_per_run: tasks (one GPU each) per run: more than one trains the run under DDP.
        wait: wait for every job, then gather the results (``False``: submit and return; Slurm only).
        experiment: an experiment that is not in the catalogue (tests, a reader's own).
        job: the job class (default :class:`RunJob`; a subclass may add behaviour, e.g. in tests).
        report: where progress lines go.

    Raises:
        ValueError: for an unknown launcher, ``wait=False`` off Slurm, ``gpus_per_run < 1``, and the
            errors of ``run_experiment``'s arguments; before anything is submitted.
    """
    from sam_tutorial.engine.experiments import _resolve
    from sam_tutorial.engine.runs import runs_root

    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}; got {launcher!r}")
    if not wait and LAUNCHERS[launcher] != "slurm":
        raise ValueError(f"not waiting needs submitit-slurm (the {launcher} jobs end with this process)")
    cfg.check_int("gpus_per_run", gpus_per_run)
    on_gpu = _device_type(device) == "cuda"
    if experiment is None:
        exp, mode, chosen = _resolve(name, mode, seeds)
    else:
        exp, mode = experiment, mode or cfg.mode()
        chosen = list(seeds) if seeds is not None else list(exp.seeds[mode])
    root = runs_root(out)
    submitit = _submitit()
    folder = root / ".submitit" / exp.name / mode
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=LAUNCHERS[launcher])
    params: dict[str, Any] = {"name": f"{exp.name}-{mode}", "tasks_per_node": gpus_per_run}
    if on_gpu and LAUNCHERS[launcher] != "debug":
        params["gpus_per_node"] = gpus_per_run
    executor.update_parameters(**(params | dict(options or {})))
    status = _statuses(exp, mode, chosen, root, gpus_per_run)
    done = Launch(folder=folder, cached=[k for k, s in status.items() if s == "cached"])
    for wave in _waves(exp.runs(mode)):
        todo = [(s.label, seed) for s in wave for seed in chosen if status[s.label, seed] != "cached"]
        if not todo:
            continue
        by_label = {s.label: s for s in exp.runs(mode)}
        make = _maker(job or RunJob, exp, mode, root, device, data_root)
        slurm = dict((options or {}).get("slurm_additional_parameters") or {})
        jobs = _submit(executor, make, todo, wait, done.jobs, by_label, slurm)
        done.jobs.update(jobs)
        for key, handle in jobs.items():
            report(f"submitted {key[0]} seed {key[1]} as job {handle.job_id} ({launcher})")
        if wait:
            _collect(jobs, done, report)
            if done.failed:
                break
    if wait and not done.failed:
        done.result = gather(exp, mode, chosen, root, gpus_per_run)
    return done


def gather(exp: Experiment, mode: str, seeds: Iterable[int], out: str | os.PathLike[str],
           world_size: int = 1) -> ExperimentResult:
    """The results of ``exp`` found in the runs folder ``out`` (what ``sam-tutorial show`` and
    :func:`sam_tutorial.engine.experiments.load_results` read, for any experiment object)."""
    from sam_tutorial.engine.runs import check_record
    from sam_tutorial.engine.storage import read_json

    specs = exp.runs(mode)
    by_label = {s.label: s for s in specs}
    records, missing = [], []
    for spec in specs:
        for seed in seeds:
            digest = run_hash(exp, mode, spec, seed, by_label, world_size)
            path = run_path(Path(out), exp, mode, spec, seed, digest)
            if path.exists():
                records.append(check_record(path, read_json(path)))
            else:
                missing.append((spec.label, seed))
    return ExperimentResult(exp, mode, records, missing)


def _device_type(device: str) -> str:
    """The type of the device the jobs train on (checked where they run, not on this machine, which may
    be a login node without a GPU).

    Raises:
        ValueError: for a string that names no torch device.
    """
    import torch

    try:
        return torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} names no torch device ({err}); e.g. cuda or cpu") from None


def _statuses(
    exp: Experiment, mode: str, seeds: list[int], root: Path, world: int
) -> dict[tuple[str, int], str]:
    """``cached`` or ``to run`` per (label, seed): the plan's test of a result file."""
    from sam_tutorial.engine.plan import result_matches

    specs = exp.runs(mode)
    by_label = {s.label: s for s in specs}
    out = {}
    for spec in specs:
        for seed in seeds:
            digest = run_hash(exp, mode, spec, seed, by_label, world)
            path = run_path(root, exp, mode, spec, seed, digest)
            out[spec.label, seed] = "cached" if result_matches(path, digest) else "to run"
    return out


def _maker(job: type[RunJob], exp: Experiment, mode: str, root: Path, device: str,
           data_root: str | os.PathLike[str] | None) -> Callable[[str, int], RunJob]:
    return lambda label, seed: job(exp, mode, label, seed, root, device, data_root)


def _submit(executor: Any, make: Callable[[str, int], RunJob], todo: list[tuple[str, int]], wait: bool,
            earlier: Mapping[tuple[str, int], Any], by_label: Mapping[str, RunSpec],
            slurm: Mapping[str, Any]) -> dict[tuple[str, int], Any]:
    """Submit one wave; off a wait, a child depends on its parent's Slurm job (``afterok``)."""
    jobs: dict[tuple[str, int], Any] = {}
    dependent = [(k, earlier.get((by_label[k[0]].init_from or "", k[1]))) for k in todo]
    if wait or all(parent is None for _, parent in dependent):
        with executor.batch():
            for label, seed in todo:
                jobs[label, seed] = executor.submit(make(label, seed))
        return jobs
    for (label, seed), parent in dependent:
        after = {} if parent is None else {"dependency": f"afterok:{parent.job_id}"}
        executor.update_parameters(slurm_additional_parameters=dict(slurm) | after)
        jobs[label, seed] = executor.submit(make(label, seed))
    return jobs


def _collect(jobs: Mapping[tuple[str, int], Any], done: Launch, report: Callable[[str], None]) -> None:
    """Wait for every job of a wave; record outputs and one-line failures (with the job's log)."""
    for key, job in jobs.items():
        try:
            output = job.results()[0]  # rank 0's (every rank returns the same record)
        except Exception as err:  # submitit re-raises the job's exception with its traceback
            last = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            done.failed[key] = f"{last} (log: {getattr(job.paths, 'stderr', '?')})"
            report(f"failed {key[0]} seed {key[1]} (job {job.job_id}): {done.failed[key]}")
            continue
        done.outputs[key] = output
        resumed = output.get("resumed_from_epoch") or 0
        report(f"done {key[0]} seed {key[1]} (job {job.job_id}"
               + (f", resumed from epoch {resumed}" if resumed else "") + ")")
