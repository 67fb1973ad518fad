"""Recorded results: results of catalogue experiments produced elsewhere (a GPU, a cluster), kept as small
JSON files under ``results/`` that the book loads while they still describe the catalogue's configuration.
The repository's ``sam_tutorial/results/`` ships with the package (package data), so an installed package
finds them from any folder; a ``results/`` folder in the working directory (or its parent) overrides it
(:func:`results_folder`, :func:`find_result`).

A recorded file holds what one run of the CLI produced, without the weights or the per-epoch history,
and where it comes from::

    {"format": "sam_tutorial.recorded/1", "experiment": "table1-resnet18-cifar10", "mode": "paper",
     "provenance": {"command": ..., "commit": ..., "package": {"sam_tutorial": ..., "torch": ...},
                    "device": ..., "date": ..., "wall_seconds": ...},
     "records": [{"label": "sam", "seed": 0, "config_hash": "3f1c...", "tags": {...},
                  "metrics": {"test_acc": 0.9601, ...}, "seconds_per_epoch": 14.2}, ...]}

``config_hash`` is the cache key of :func:`sam_tutorial.engine.runs.run_hash` for that (run, seed) and
number of processes. :func:`load_recorded` recomputes it from the catalogue *as it is now*: a file whose
hashes all match is loaded; a file with a stale hash (the experiment's configuration changed since it was
recorded), an unknown experiment or run, or another format is ignored, with the reason.

Write one from finished runs (the cached results of ``python -m sam_tutorial run NAME``)::

    python -m sam_tutorial.engine.recorded table1-resnet18-cifar10 --mode paper --out runs \\
        --to sam_tutorial/results/table1-resnet18-cifar10-paper.json \\
        --command "python -m sam_tutorial run ..."

>>> rec = {"label": "sgd", "seed": 0, "config_hash": expected_hash("smoke", "quick", "sgd", 0)}
>>> check_recorded({"format": RECORDED_FORMAT, "experiment": "smoke", "mode": "quick", "records": [rec]})
>>> check_recorded({"format": RECORDED_FORMAT, "experiment": "smoke", "mode": "quick",
...                 "records": [{**rec, "config_hash": "000000000000"}]})[:39]
"run ('sgd', seed 0) was recorded for co"
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "find_result",
    "packaged_results",
    "results_folder",
    "RECORDED_FORMAT",
    "LoadedResults",
    "RecordedFile",
    "check_recorded",
    "expected_hash",
    "git_commit",
    "load_recorded",
    "main",
    "records_from_results",
    "write_recorded",
]

RECORDED_FORMAT = "sam_tutorial.recorded/1"

PROVENANCE_KEYS = ("command", "commit", "package", "device", "date", "wall_seconds")
"""What every recorded file's ``provenance`` holds."""


def expected_hash(experiment: str, mode: str, label: str, seed: int, world_size: int = 1) -> str:
    """The catalogue's current cache key of one (run, seed) of ``experiment`` in ``mode``.

    Raises:
        ValueError: for an unknown experiment, mode or run label.
    """
    return _hasher(experiment, mode)(label, seed, world_size)


def _hasher(experiment: str, mode: str) -> Callable[[str, int, int], str]:
    """``(label, seed, world_size) -> hash`` for the runs of ``experiment`` in ``mode``, the catalogue
    looked up once (a file's records share it).

    Raises:
        ValueError: for an unknown experiment or mode (at once), or an unknown run label (when called).
    """
    from sam_tutorial.engine.experiments import get_experiment
    from sam_tutorial.engine.runs import run_hash

    exp = get_experiment(experiment)
    specs = {s.label: s for s in exp.runs(mode)}

    def digest(label: str, seed: int, world_size: int = 1) -> str:
        if label not in specs:
            raise ValueError(
                f"{label!r} is not a run of {experiment!r} in {mode} mode; its runs: {', '.join(specs)}"
            )
        return run_hash(exp, mode, specs[label], int(seed), specs, world_size)

    return digest


def _world_size(record: Mapping[str, Any]) -> int:
    dist = record.get("distributed") or {}
    return int(dist.get("world_size", 1)) if isinstance(dist, Mapping) else 1


def check_recorded(data: Mapping[str, Any]) -> str | None:
    """Why a recorded file cannot be used now (``None`` if it can): another format, no records, an
    experiment or run the catalogue does not have, or a configuration hash that no longer matches."""
    if data.get("format") != RECORDED_FORMAT:
        return f"not a recorded result (format {data.get('format')!r}, expected {RECORDED_FORMAT!r})"
    records = data.get("records")
    if not isinstance(records, list) or not records:
        return "it holds no records"
    experiment, mode = data.get("experiment"), data.get("mode")
    try:
        hasher = _hasher(str(experiment), str(mode))
    except ValueError as err:
        hasher, unknown = None, err
    for rec in records:
        key = f"({rec.get('label')!r}, seed {rec.get('seed')})"
        if hasher is None:
            return f"run {key}: {unknown}"
        try:
            digest = hasher(str(rec.get("label")), int(rec.get("seed", -1)), _world_size(rec))
        except (ValueError, TypeError) as err:
            return f"run {key}: {err}"
        if rec.get("config_hash") != digest:
            return (
                f"run {key} was recorded for configuration {rec.get('config_hash')!r}; the catalogue's "
                f"{experiment} ({mode} mode) is now {digest!r} (its configuration changed since): "
                "re-run and re-record it"
            )
    return None


@dataclass(frozen=True)
class RecordedFile:
    """A recorded file that matches the catalogue: its path and content."""

    path: Path
    data: dict[str, Any]

    @property
    def experiment(self) -> str:
        return str(self.data["experiment"])

    @property
    def mode(self) -> str:
        return str(self.data["mode"])

    @property
    def records(self) -> list[dict[str, Any]]:
        return list(self.data["records"])

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.data.get("provenance", {}))

    def values(self, label: str, metric: str) -> list[float]:
        """``metric`` of run ``label``, one value per seed (records without it are left out)."""
        return [
            float(r["metrics"][metric])
            for r in self.records
            if r["label"] == label and r.get("metrics", {}).get(metric) is not None
        ]


@dataclass
class LoadedResults:
    """What :func:`load_recorded` found: the usable files, and the ignored ones with their reasons."""

    loaded: list[RecordedFile] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)

    def get(self, experiment: str, mode: str | None = None) -> RecordedFile | None:
        """The loaded file of ``experiment`` (in ``mode``, if given; the last one found wins)."""
        found = [f for f in self.loaded if f.experiment == experiment and (mode is None or f.mode == mode)]
        return found[-1] if found else None

    def report(self) -> str:
        """One line per file: loaded (experiment, mode, runs, provenance) or ignored (reason)."""
        lines = [
            f"loaded  {f.path.name}: {f.experiment} ({f.mode} mode), {len(f.records)} runs, "
            f"{f.provenance.get('device', '?')}, {f.provenance.get('date', '?')}"
            for f in self.loaded
        ]
        lines += [f"ignored {path.name}: {reason}" for path, reason in self.ignored]
        return "\n".join(lines) if lines else "no recorded results"


def load_recorded(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, include_other_formats: bool = False
) -> LoadedResults:
    """Load the recorded files among ``paths`` (a folder: its ``*.json``) that match the catalogue.

    Args:
        paths: a folder, a file, or several files.
        include_other_formats: also list files of another format (bench results, chapter studies) among
            the ignored ones (default: skip them silently; they are not recorded results).

    Returns:
        :class:`LoadedResults`: the files whose every record's configuration hash equals the catalogue's
        current one, and the others with the reason each was ignored.
    """
    from sam_tutorial.engine.storage import read_json

    if isinstance(paths, str | os.PathLike):
        root = Path(paths)
        files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    else:
        files = [Path(p) for p in paths]
    out = LoadedResults()
    for path in files:
        try:
            data = read_json(path)
        except (OSError, ValueError) as err:
            out.ignored.append((path, f"unreadable ({err})"))
            continue
        reason = check_recorded(data)
        if reason is None:
            out.loaded.append(RecordedFile(path, data))
        elif data.get("format") == RECORDED_FORMAT or include_other_formats:
            out.ignored.append((path, reason))
    return out


def packaged_results() -> Path:
    """The recorded results that ship with the package (``sam_tutorial/results/``, package data found
    through :mod:`importlib.resources`), so that a chapter run on Colab or in an empty folder finds them."""
    from importlib.resources import files

    return Path(str(files("sam_tutorial") / "results"))


def _folders() -> tuple[Path, ...]:
    # a local results/ (the working directory, or its parent: a notebook runs in book/) overrides the
    # results that ship with the package
    return (Path.cwd() / "results", Path.cwd().parent / "results", packaged_results())


def results_folder() -> Path:
    """The folder of recorded results: ``results/`` of the working directory or of its parent if there
    is one (a local folder replaces the packaged one as a whole), else :func:`packaged_results`.

    Raises:
        FileNotFoundError: if none exists (a broken installation).
    """
    for folder in _folders():
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"no results/ folder in the working directory or its parent, and none in the package "
        f"({packaged_results()}); reinstall sam_tutorial"
    )


def find_result(name: str) -> Path:
    """``<folder>/<name>`` from the first folder :func:`results_folder` searches that has it (one file in a
    local ``results/`` overrides the packaged one of that name only).

    Raises:
        FileNotFoundError: if none has it.
    """
    for folder in _folders():
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"results/{name} not found (looked in results/ of the working directory, of its "
                            f"parent, and in the package: {packaged_results()})")


def git_commit(folder: str | os.PathLike[str] | None = None) -> str:
    """The short commit of the repository holding ``folder`` (default: the package's), with ``+dirty``
    when tracked files differ from it; ``"unknown"`` outside a git checkout."""
    where = Path(folder) if folder is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, check=True,
                              timeout=10)
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def records_from_results(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The recorded form of result records (what :func:`sam_tutorial.engine.runs.run_one` returns):
    label, seed, configuration hash, tags, final metrics, seconds per epoch, number of processes."""
    out = []
    for r in records:
        rec = {
            "label": r["label"],
            "seed": r["seed"],
            "config_hash": r["config_hash"],
            "tags": dict(r.get("tags", {})),
            "metrics": dict(r["metrics"]),
            "seconds_per_epoch": r.get("timing", {}).get("seconds_per_epoch"),
        }
        if "distributed" in r.get("config", {}):
            rec["distributed"] = dict(r["config"]["distributed"])
        out.append(rec)
    return out


def write_recorded(
    path: str | os.PathLike[str],
    experiment: str,
    mode: str,
    records: Sequence[Mapping[str, Any]],
    *,
    command: str,
    device: str,
    wall_seconds: float,
    notes: str = "",
    commit: str | None = None,
) -> dict[str, Any]:
    """Write a recorded file (atomically) and return its content.

    Args:
        path: the JSON file (by convention ``results/<experiment>-<mode>.json``).
        experiment, mode: the catalogue experiment the records claim to be.
        records: recorded records (see :func:`records_from_results`), each with ``label``, ``seed``,
            ``config_hash`` and ``metrics``.
        command: the command that produced them.
        device: where they ran (e.g. ``"cuda: NVIDIA H100"``).
        wall_seconds: the wall time of the runs.
        notes: anything a reader should know.
        commit: the package's git commit (default: :func:`git_commit`).

    Raises:
        ValueError: if a record does not match the catalogue now (see :func:`check_recorded`); nothing is
            written then.
    """
    from sam_tutorial.engine.runs import versions
    from sam_tutorial.engine.storage import write_json

    data: dict[str, Any] = {
        "format": RECORDED_FORMAT,
        "experiment": experiment,
        "mode": mode,
        "provenance": {
            "command": command,
            "commit": commit if commit is not None else git_commit(),
            "package": versions(),
            "device": device,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "wall_seconds": float(wall_seconds),
            "notes": notes,
        },
        "records": [dict(r) for r in records],
    }
    reason = check_recorded(data)
    if reason is not None:
        raise ValueError(f"not written: {reason}")
    write_json(path, data)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sam_tutorial.engine.recorded NAME --mode MODE [--out runs] --to FILE``: record the
    cached results of an experiment (every run and seed must be finished)."""
    from sam_tutorial import config
    from sam_tutorial.engine.experiments import load_results

    parser = argparse.ArgumentParser(prog="python -m sam_tutorial.engine.recorded", description=main.__doc__)
    parser.add_argument("name", help="experiment name")
    parser.add_argument("--mode", choices=config.MODES, default="paper")
    parser.add_argument(
        "--out", default=None, help="the runs folder of `run` (default: $SAM_TUTORIAL_RUNS or ./runs)"
    )
    parser.add_argument(
        "--world-size", type=int, default=1, help="processes of the torchrun that trained them"
    )
    parser.add_argument(
        "--to", required=True, help="the recorded file to write, e.g. results/NAME-paper.json"
    )
    parser.add_argument(
        "--command", default=None, help="the command that trained them (default: the run command)"
    )
    parser.add_argument("--notes", default="")
    args = parser.parse_args(argv)
    try:
        result = load_results(args.name, mode=args.mode, out=args.out, world_size=args.world_size)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result.missing or not result.records:
        todo = ", ".join(f"{label} (seed {seed})" for label, seed in result.missing)
        print(
            f"error: not every run is finished ({todo or 'no results'}); run `python -m sam_tutorial run "
            f"{args.name} --mode {args.mode}` first",
            file=sys.stderr,
        )
        return 1
    devices = sorted({str(r.get("provenance", {}).get("device", "?")) for r in result.records})
    wall = sum(float(r["timing"].get("seconds_this_call") or 0.0) for r in result.records)
    command = args.command or f"python -m sam_tutorial run {args.name} --mode {args.mode}"
    write_recorded(
        args.to,
        args.name,
        args.mode,
        records_from_results(result.records),
        command=command,
        device=", ".join(devices),
        wall_seconds=wall,
        notes=args.notes,
    )
    print(f"wrote {args.to}: {len(result.records)} runs of {args.name} ({args.mode} mode)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
