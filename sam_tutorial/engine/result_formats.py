"""The formats of the files under ``results/`` and what a valid file of each holds.

================================ ==================================================================
``format``                       content (beside ``format`` and ``provenance``)
================================ ==================================================================
``sam_tutorial.recorded/1``      ``experiment``, ``mode``, ``records``: catalogue runs, each with
                                 ``label``, ``seed``, ``config_hash``, ``metrics`` (final values),
                                 optionally ``tags``, ``seconds_per_epoch``, ``history`` (per-epoch
                                 series such as the step metrics) and ``distributed``
``sam_tutorial.bench/1``         ``device``, ``model``, ``times`` (seconds per step by variant),
                                 ``ratios`` (``"a/b"``: time of a over time of b)
``sam_tutorial.timing/1``        ``models`` (seconds per step by model and optimizer), ``batches``
================================ ==================================================================

Every file's ``provenance`` has the keys of :data:`sam_tutorial.engine.provenance.PROVENANCE_KEYS`.
:func:`problems` lists what is wrong with a file's content (types, ranges: accuracies are fractions in
[0, 1], every number finite; duplicate ``(label, seed)`` records); the one reader,
:mod:`sam_tutorial.engine.recorded`, refuses a file with any (book: appendix, "Recorded results").

>>> problems({"format": BENCH_FORMAT, "device": "cpu", "model": "m", "times": {"sgd": -1.0}})
['provenance: missing (a dict with command, commit, package, device, date, wall_seconds)', \
'times.sgd: -1.0 is not a finite number > 0']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from sam_tutorial.engine.provenance import PROVENANCE_KEYS

__all__ = ["BENCH_FORMAT", "FORMATS", "RECORDED_FORMAT", "TIMING_FORMAT", "is_accuracy", "problems"]

RECORDED_FORMAT = "sam_tutorial.recorded/1"
BENCH_FORMAT = "sam_tutorial.bench/1"
TIMING_FORMAT = "sam_tutorial.timing/1"


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def is_accuracy(name: str) -> bool:
    """Whether a metric name is an accuracy (a fraction in [0, 1]): ``test_acc``, ``train_acc_clean`` ...

    >>> is_accuracy("train_acc_clean"), is_accuracy("trace_V")
    (True, False)
    """
    return name == "acc" or name.endswith("_acc") or "_acc_" in name or name.startswith("acc_")


def _provenance(data: Mapping[str, Any]) -> list[str]:
    prov = data.get("provenance")
    if not isinstance(prov, Mapping):
        return [f"provenance: missing (a dict with {', '.join(PROVENANCE_KEYS)})"]
    out = [f"provenance.{k}: missing" for k in PROVENANCE_KEYS if k not in prov]
    for key in ("command", "commit", "device", "date"):
        if key in prov and not (isinstance(prov[key], str) and prov[key].strip()):
            out.append(f"provenance.{key}: {prov[key]!r} is not a non-empty string")
    package = prov.get("package")
    if "package" in prov and not (isinstance(package, Mapping) and {"sam_tutorial", "torch"} <= set(package)):
        out.append("provenance.package: must name the versions of sam_tutorial and torch")
    wall = prov.get("wall_seconds")
    if wall is not None and not (_number(wall) and wall >= 0):
        out.append(f"provenance.wall_seconds: {wall!r} is not a finite number >= 0 (or null)")
    return out


def _strings(data: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Problems of the fields ``keys`` of ``data`` that must be non-empty strings."""
    return [f"{key}: {data.get(key)!r} is not a non-empty string" for key in keys
            if not (isinstance(data.get(key), str) and data[key])]


def _values(where: str, values: Any, *, positive: bool = False, nullable: bool = True) -> list[str]:
    """Problems of a mapping of name -> number (finite; accuracies in [0, 1]; > 0 if ``positive``)."""
    if not isinstance(values, Mapping):
        return [f"{where}: {type(values).__name__} is not a dict of numbers"]
    out = []
    for name, v in values.items():
        if v is None and nullable:
            continue
        if not _number(v) or (positive and v <= 0):
            out.append(f"{where}.{name}: {v!r} is not a finite number{' > 0' if positive else ''}")
        elif is_accuracy(str(name)) and not 0 <= v <= 1:
            out.append(f"{where}.{name}: {v!r} is an accuracy outside [0, 1] (record fractions, not percent)")
    return out


def _series(where: str, history: Any) -> list[str]:
    if not isinstance(history, Mapping):
        return [f"{where}: {type(history).__name__} is not a dict of per-epoch lists"]
    out = []
    for name, series in history.items():
        if not isinstance(series, list):
            out.append(f"{where}.{name}: {type(series).__name__} is not a list")
            continue
        out += _values(f"{where}.{name}", {str(i): v for i, v in enumerate(series)})
    return out


def _record(i: int, rec: Any) -> list[str]:
    where = f"records[{i}]"
    if not isinstance(rec, Mapping):
        return [f"{where}: not a dict"]
    out = []
    if not (isinstance(rec.get("label"), str) and rec["label"]):
        out.append(f"{where}.label: {rec.get('label')!r} is not a non-empty string")
    seed = rec.get("seed")
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        out.append(f"{where}.seed: {seed!r} is not an integer >= 0")
    if not isinstance(rec.get("config_hash"), str):
        out.append(f"{where}.config_hash: {rec.get('config_hash')!r} is not a string")
    out += _values(f"{where}.metrics", rec.get("metrics"))
    if "tags" in rec and not isinstance(rec["tags"], Mapping):
        out.append(f"{where}.tags: not a dict")
    spe = rec.get("seconds_per_epoch")
    if spe is not None and not (_number(spe) and spe >= 0):
        out.append(f"{where}.seconds_per_epoch: {spe!r} is not a finite number >= 0 (or null)")
    if "history" in rec:
        out += _series(f"{where}.history", rec["history"])
    return out


def _recorded(data: Mapping[str, Any]) -> list[str]:
    out = _strings(data, ("experiment", "mode"))
    records = data.get("records")
    if not isinstance(records, list) or not records:
        return [*out, "records: missing or empty (a non-empty list of runs)"]
    seen: set[tuple[Any, ...]] = set()
    for i, rec in enumerate(records):
        bad = _record(i, rec)
        out += bad
        if bad:
            continue
        dist = rec.get("distributed") or {}
        key = (rec["label"], rec["seed"], dist.get("world_size", 1) if isinstance(dist, Mapping) else 1)
        if key in seen:
            out.append(f"records[{i}]: run {key[0]!r} seed {key[1]} appears twice (one record per run, seed)")
        seen.add(key)
    return out


def _bench(data: Mapping[str, Any]) -> list[str]:
    out = _strings(data, ("device", "model"))
    times = data.get("times")
    if not isinstance(times, Mapping) or not times:
        return [*out, "times: missing or empty (seconds per step by variant)"]
    out += _values("times", times, positive=True, nullable=False)
    out += _values("ratios", data.get("ratios", {}), positive=True, nullable=False)
    return out


def _timing(data: Mapping[str, Any]) -> list[str]:
    out = []
    if not isinstance(data.get("models"), Mapping) or not data["models"]:
        out.append("models: missing or empty (seconds per step by model and optimizer)")
    batches = data.get("batches")
    if not (isinstance(batches, list) and batches and all(isinstance(b, int) and b > 0 for b in batches)):
        out.append(f"batches: {batches!r} is not a non-empty list of batch sizes")
    return out


FORMATS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    RECORDED_FORMAT: _recorded, BENCH_FORMAT: _bench, TIMING_FORMAT: _timing}
"""Every format a file under ``results/`` may have, with the check of its content."""


def problems(data: Any) -> list[str]:
    """Everything wrong with a result file's content (empty if nothing): its format tag, its provenance,
    and the fields of its format (types, finite numbers, accuracies in [0, 1], no duplicate runs)."""
    if not isinstance(data, Mapping):
        return [f"the file holds a {type(data).__name__}, not a JSON object"]
    fmt = data.get("format")
    if fmt not in FORMATS:
        return [f"format: {fmt!r} is not one of {', '.join(FORMATS)}"]
    return _provenance(data) + FORMATS[fmt](data)
