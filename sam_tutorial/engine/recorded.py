"""Recorded results: results of catalogue experiments produced elsewhere (a GPU, a cluster), kept as small
JSON files under ``results/`` that the book loads while they still describe the catalogue's configuration.
The repository's ``sam_tutorial/results/`` ships with the package (package data), so an installed package
finds them from any folder; a ``results/`` folder in the working directory (or its parent) overrides it
(:func:`results_folder`, :func:`find_result`).

This module is the one reader of every file under ``results/`` (recorded catalogue runs, benchmarks,
timings; their formats: :mod:`sam_tutorial.engine.result_formats`): :func:`read_result` returns a file's
content after checking its format tag, its provenance (:mod:`sam_tutorial.engine.provenance`), its values
(types, finite numbers, accuracies as fractions in [0, 1], one record per run and seed) and, for recorded
catalogue runs, that it still describes the catalogue. :mod:`sam_tutorial.engine.record` writes them
(:func:`~sam_tutorial.engine.record.write_result_file`, which the benchmark and the timing tool call too).

A recorded file holds what one run of the CLI produced, without the weights (and of the per-epoch history
only the step metrics, ``history``), and where it comes from::

    {"format": "sam_tutorial.recorded/1", "experiment": "table1-resnet18-cifar10", "mode": "paper",
     "provenance": {"command": ..., "commit": ..., "package": {"sam_tutorial": ..., "torch": ...},
                    "device": ..., "date": ..., "wall_seconds": ...},
     "records": [{"label": "sam", "seed": 0, "config_hash": "3f1c...", "tags": {...},
                  "metrics": {"test_acc": 0.9601, ...}, "seconds_per_epoch": 14.2}, ...]}

``config_hash`` is the cache key of :func:`sam_tutorial.engine.runs.run_hash` for that (run, seed) and
number of processes. :func:`load_recorded` recomputes it from the catalogue *as it is now*: a file whose
hashes all match is loaded; a file with a stale hash (the experiment's configuration changed since it was
recorded), an unknown experiment or run, or invalid content is skipped, named in a warning, with the
reason, while the other files load. Benchmarks and timings have no catalogue entry to be stale against:
their check is their format and provenance.

Write one from finished runs (the cached results of ``python -m sam_tutorial run NAME``)::

    python -m sam_tutorial.engine.record table1-resnet18-cifar10 --mode paper --out runs \\
        --to sam_tutorial/results/table1-resnet18-cifar10-paper.json \\
        --command "python -m sam_tutorial run ..."

>>> prov = {"command": "c", "commit": "x", "package": {"sam_tutorial": "0.1.0", "torch": "2"},
...         "device": "cpu", "date": "2026-12-01", "wall_seconds": 1.0}
>>> rec = {"label": "sgd", "seed": 0, "config_hash": expected_hash("smoke", "quick", "sgd", 0),
...        "metrics": {"test_acc": 0.5}}
>>> data = {"format": RECORDED_FORMAT, "experiment": "smoke", "mode": "quick", "provenance": prov}
>>> check_recorded({**data, "records": [rec]})
>>> check_recorded({**data, "records": [{**rec, "config_hash": "000000000000"}]})[:39]
"run ('sgd', seed 0) was recorded for co"
>>> check_recorded({**data, "records": [{**rec, "metrics": {"test_acc": 50.0}}]})[:60]
'invalid: records[0].metrics.test_acc: 50.0 is an accuracy ou'
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam_tutorial.engine.result_formats import RECORDED_FORMAT, problems

__all__ = [
    "RECORDED_FORMAT",
    "LoadedResults",
    "RecordedFile",
    "check_recorded",
    "expected_hash",
    "find_result",
    "load_recorded",
    "packaged_results",
    "read_result",
    "results_folder",
    "stale_reason",
    "summarise",
]


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
    """Why a recorded file cannot be used now (``None`` if it can): another format, invalid content (see
    :func:`sam_tutorial.engine.result_formats.problems`), an experiment or run the catalogue does not
    have, or a configuration hash that no longer matches."""
    if not isinstance(data, Mapping) or data.get("format") != RECORDED_FORMAT:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        return f"not a recorded result (format {found!r}, expected {RECORDED_FORMAT!r})"
    bad = problems(data)
    if bad:
        return "invalid: " + "; ".join(bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
    return stale_reason(data)


def stale_reason(data: Mapping[str, Any]) -> str | None:
    """Why a valid recorded file no longer describes the catalogue (``None``: it does)."""
    records = data["records"]
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

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per record: ``label``, ``seed``, the tags, the final metrics, ``seconds_per_epoch``
        and ``history`` (the per-epoch series, ``{}`` if none were recorded)."""
        return [{"label": r["label"], "seed": r["seed"], **r.get("tags", {}), **r["metrics"],
                 "seconds_per_epoch": r.get("seconds_per_epoch"), "history": r.get("history", {})}
                for r in self.records]

    def summary(self, group: Sequence[str] = ("label",), keys: Sequence[str] = ("test_acc",),
                derived: Mapping[str, Callable[[dict[str, Any]], float]] | None = None
                ) -> list[dict[str, Any]]:
        """:func:`summarise` of :meth:`rows`."""
        return summarise(self.rows(), group, keys, derived)

    def values(self, label: str, metric: str) -> list[float]:
        """``metric`` of run ``label``, one value per seed (records without it are left out)."""
        return [
            float(r["metrics"][metric])
            for r in self.records
            if r["label"] == label and r.get("metrics", {}).get(metric) is not None
        ]


def summarise(rows: Iterable[Mapping[str, Any]], group: Sequence[str] = ("label",),
              keys: Sequence[str] = ("test_acc",),
              derived: Mapping[str, Callable[[dict[str, Any]], float]] | None = None) -> list[dict[str, Any]]:
    """One entry per distinct value of the ``group`` fields of ``rows`` (in order of appearance): those
    fields, ``n`` (the rows, i.e. seeds) and ``(mean, sample std)`` over them
    (:func:`sam_tutorial.stats.mean_std`) of each key that every row of the group has; ``derived`` adds
    keys computed from a row (e.g. ``{"gap": lambda r: r["train_acc"] - r["test_acc"]}``).

    >>> summarise([{"label": "a", "x": 1.0}, {"label": "a", "x": 3.0}], keys=("x",))
    [{'label': 'a', 'n': 2, 'x': (2.0, 1.4142135623730951)}]
    """
    from sam_tutorial.stats import mean_std

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        full = dict(row)
        full.update((k, fn(full)) for k, fn in (derived or {}).items())
        groups.setdefault(tuple(full.get(g) for g in group), []).append(full)
    out = []
    for value, members in groups.items():
        entry: dict[str, Any] = {**dict(zip(group, value)), "n": len(members)}
        for key in keys:
            if all(m.get(key) is not None for m in members):
                entry[key] = mean_std(float(m[key]) for m in members)
        out.append(entry)
    return out


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
        include_other_formats: also list files of another format (benchmarks, timings) among the ignored
            ones (default: skip them silently; they are not recorded runs).

    Returns:
        :class:`LoadedResults`: the files whose every record's configuration hash equals the catalogue's
        current one, and the others with the reason each was ignored (each also named in a
        ``UserWarning``, unless it is merely of another format).
    """
    from sam_tutorial.engine.storage import read_json

    if isinstance(paths, str | os.PathLike):
        root = Path(paths)
        files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    else:
        files = [Path(p) for p in paths]
    out = LoadedResults()
    for path in files:
        data: Any = None
        try:
            data = read_json(path)
        except (OSError, ValueError) as err:
            reason: str | None = f"unreadable ({err})"
        else:
            reason = check_recorded(data)
        if reason is None:
            out.loaded.append(RecordedFile(path, data))
            continue
        ours = data is None or not isinstance(data, Mapping) or data.get("format") == RECORDED_FORMAT
        if ours:
            warnings.warn(f"skipped the recorded result {path}: {reason}", UserWarning, stacklevel=2)
        if ours or include_other_formats:
            out.ignored.append((path, reason))
    return out


def read_result(name: str | os.PathLike[str], *, allow_stale: bool = False) -> dict[str, Any]:
    """The content of one result file after every check: a name under ``results/`` (``"bench-cpu.json"``,
    found by :func:`find_result`) or a path; any format of :mod:`sam_tutorial.engine.result_formats`.

    Args:
        name: a file name inside the results folder, or a path (anything with a folder in it).
        allow_stale: return a recorded file even if the catalogue's configuration changed since.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: for a name that leaves the results folder or is empty.
        sam_tutorial.engine.storage.ResultFileError: naming the file and what is wrong with it (unreadable,
            an unknown format, invalid content, or stale).
    """
    from sam_tutorial.engine.storage import ResultFileError, read_json

    path = Path(name) if isinstance(name, os.PathLike) or os.sep in str(name) else find_result(str(name))
    try:
        data = read_json(path)
    except ValueError as err:
        raise ResultFileError(f"the result file {path} is unreadable: {err}") from err
    bad = problems(data)
    if bad:
        raise ResultFileError(f"the result file {path} is invalid: {'; '.join(bad)}; re-record it with the "
                              "command in its provenance")
    if data["format"] == RECORDED_FORMAT and not allow_stale:
        reason = stale_reason(data)
        if reason is not None:
            raise ResultFileError(f"the recorded result {path} is stale: {reason}")
    result: dict[str, Any] = data
    return result


def packaged_results() -> Path:
    """The recorded results that ship with the package (``sam_tutorial/results/``, package data found
    through ``importlib.resources``), so that a chapter run on Colab or in an empty folder finds them."""
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
        ValueError: if ``name`` is not a plain file name (empty, a folder, ``..``, a path that would leave
            the results folder).
        FileNotFoundError: if none has it.
    """
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or Path(name).name != name \
            or "/" in name or "\\" in name:
        raise ValueError(f"name must be the name of a file inside the results folder, such as "
                         f"'bench-cpu.json'; got {name!r}")
    for folder in _folders():
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"results/{name} not found (looked in results/ of the working directory, of its "
                            f"parent, and in the package: {packaged_results()})")
