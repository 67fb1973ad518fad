"""A plan before a bill: the runs of an experiment, which of them are already done, and what the rest
will cost (``sam-tutorial plan NAME --mode paper``; book chapter 6).

Each (run, seed) has one status, decided from the files the runs would use, nothing is trained:

=============== ====================================================================================
``cached``      its result file (``<out>/<experiment>/<mode>/<label>-seed<seed>-<hash>.json``) is there
                and matches the catalogue's configuration: ``run`` serves it without training
``recorded``    a recorded file in ``results/`` holds it with the catalogue's current hash (the book
                uses it); ``run`` would still train it, for the run folder has no result
``resumes``     a checkpoint of it is there: ``run`` continues after its last finished epoch
``to run``      nothing: ``run`` trains it from the start
=============== ====================================================================================

Hours come from :mod:`sam_tutorial.engine.estimate` (a run that resumes is charged its remaining epochs).

>>> from sam_tutorial.engine.estimate import StepTimes
>>> times = StepTimes("cuda: example", {"mlp": {"sgd": 0.01, "sam": 0.02}})
>>> plan = plan_experiment("smoke", mode="quick", out="/nonexistent-runs", results=None, times=times)
>>> [(r.label, r.status) for r in plan.runs][:2]
[('sgd', 'to run'), ('sam', 'to run')]
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sam_tutorial.engine.estimate import StepTimes, run_seconds

__all__ = ["STATUSES", "Plan", "PlannedRun", "checkpoint_epoch", "plan_experiment", "result_matches"]

STATUSES = ("cached", "recorded", "resumes", "to run")


@dataclass(frozen=True)
class PlannedRun:
    """One (run, seed) of a plan.

    Attributes:
        label: the run's label.
        seed: the seed.
        status: one of ``STATUSES`` (cached, recorded, resumes, to run).
        done_epochs: epochs in its checkpoint (``resumes``), else 0.
        epochs: the run's epochs.
        hours: device-hours of the whole run from scratch (``None`` without step times).
        basis: how the step time was obtained (``"measured"``, a derivation, a FLOP scaling).
        path: its result file.
    """

    label: str
    seed: int
    status: str
    done_epochs: int
    epochs: int
    hours: float | None
    basis: str
    path: Path

    @property
    def hours_left(self) -> float | None:
        """Device-hours still needed (0 when ``cached`` or ``recorded``, the epochs not yet in the
        checkpoint when ``resumes``)."""
        if self.status in ("cached", "recorded"):
            return 0.0
        return None if self.hours is None else self.hours * (self.epochs - self.done_epochs) / self.epochs


@dataclass
class Plan:
    """The plan of one experiment in one mode (see the module docstring)."""

    experiment: str
    mode: str
    runs: list[PlannedRun]
    device: str | None
    sources: tuple[str, ...] = field(default_factory=tuple)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def to_train(self) -> list[PlannedRun]:
        """The runs ``run`` would train (everything not cached)."""
        return [r for r in self.runs if r.status != "cached"]

    def hours(self, *, remaining: bool = True) -> float | None:
        """Device-hours of the runs still to train (``remaining=False``: of every run, from scratch)."""
        values = [r.hours_left if remaining else r.hours for r in self.runs]
        return None if any(v is None for v in values) else sum(v or 0.0 for v in values)

    def table(self) -> str:
        """The plan as text: a header, one line per (run, seed), the totals."""
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATUSES)
        lines = [f"# {self.experiment} ({self.mode} mode): {len(self.runs)} runs ({counts})"]
        if self.device is None:
            lines.append("# no step times for an estimate: measure them with tools/paper_smoke.py")
        else:
            lines.append(f"# device-hours estimated for {self.device} from {', '.join(self.sources)}")
        rows = [["run", "seed", "status", "hours left", "basis of the step time"]]
        for r in self.runs:
            status = f"resumes at {r.done_epochs}/{r.epochs}" if r.status == "resumes" else r.status
            left = r.hours_left
            hours = "-" if left is None else f"{left:.2f}"
            rows.append([r.label, str(r.seed), status, hours, r.basis])
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        left, whole = self.hours(), self.hours(remaining=False)
        if left is not None and whole is not None:
            n_left = sum(r.status in ("resumes", "to run") for r in self.runs)
            lines.append(f"# to train: {n_left} runs, "
                         f"{left:.1f} device-hours (all {len(self.runs)} from scratch: {whole:.1f})")
        return "\n".join(lines)


def checkpoint_epoch(path: str | os.PathLike[str]) -> int | None:
    """The finished epochs in the checkpoint of a run (``None``: no checkpoint, or an unreadable one)."""
    import torch

    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(payload["state"]["epoch"])
    except Exception:  # a truncated or foreign file: run_one will say so; the plan only reads
        return None


def _recorded_hashes(results: str | os.PathLike[str] | None, experiment: str, mode: str) -> set[str]:
    if results is None or not Path(results).is_dir():
        return set()
    from sam_tutorial.engine.recorded import load_recorded

    found = load_recorded(results)
    return {str(r["config_hash"]) for f in found.loaded if f.experiment == experiment and f.mode == mode
            for r in f.records}


def plan_experiment(
    name: str,
    *,
    mode: str | None = None,
    seeds: Iterable[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    times: StepTimes | None = None,
    world_size: int = 1,
) -> Plan:
    """The plan of an experiment: every (run, seed) with its status and the hours it still needs.

    Args:
        name: an experiment of the catalogue.
        mode: ``quick``, ``standard`` or ``paper`` (default: the configured mode).
        seeds: the seeds (default: the experiment's seeds for the mode).
        out: the runs folder (default: ``$SAM_TUTORIAL_RUNS`` or ``./runs``).
        results: a folder of recorded files (``results/``; ``None``: none).
        times: step times on the device to estimate for (``None``: no hours).
        world_size: processes per run (torchrun); the cache keys depend on it.

    Raises:
        ValueError: for an unknown experiment, mode or seed, or an ``out`` that is a file.
    """
    from sam_tutorial.engine.experiments import _resolve
    from sam_tutorial.engine.runs import run_hash, run_path, runs_root

    exp, mode, chosen = _resolve(name, mode, seeds)
    root = runs_root(out)
    specs = exp.runs(mode)
    by_label = {s.label: s for s in specs}
    recorded = _recorded_hashes(results, exp.name, mode)
    planned = []
    for spec in specs:
        estimate = None if times is None else run_seconds(
            times, str(spec.tags.get("model", spec.model)), spec.train, spec.data)
        for seed in chosen:
            digest = run_hash(exp, mode, spec, seed, by_label, world_size)
            path = run_path(root, exp, mode, spec, seed, digest)
            done = checkpoint_epoch(path.with_suffix(".pt")) or 0
            status = "to run"
            if result_matches(path, digest):
                status, done = "cached", spec.train.epochs
            elif digest in recorded:
                status = "recorded"
            elif done:
                status = "resumes"
            hours = None if estimate is None else estimate[0] / 3600
            planned.append(PlannedRun(spec.label, seed, status, done, spec.train.epochs, hours,
                                      "" if estimate is None else estimate[1], path))
    return Plan(exp.name, mode, planned, None if times is None else times.device,
                () if times is None else times.sources)


def result_matches(path: str | os.PathLike[str], digest: str) -> bool:
    """Whether the result file ``path`` exists and holds the run of configuration hash ``digest`` (what
    ``run`` serves from the cache)."""
    from sam_tutorial.engine.storage import read_json

    try:
        record = read_json(path)
    except (OSError, ValueError):
        return False
    return bool(record.get("config_hash") == digest)
