"""Writing result files: the one writer of ``results/`` (:func:`write_result_file`, with the format tag
and the provenance of :mod:`sam_tutorial.engine.provenance`), recorded catalogue runs
(:func:`write_recorded`, :func:`records_from_results`) and their command line::

    python -m sam_tutorial run NAME --mode paper                  # train (cached, resumable)
    python -m sam_tutorial.engine.record NAME --mode paper --out runs --to results/NAME-paper.json

Every file is checked before it is written (:func:`sam_tutorial.engine.result_formats.problems`; for
recorded runs also against the catalogue, :func:`sam_tutorial.engine.recorded.stale_reason`): nothing
invalid or half-written reaches ``results/``. :mod:`sam_tutorial.engine.recorded` reads them back.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sam_tutorial.engine.provenance import provenance
from sam_tutorial.engine.recorded import stale_reason
from sam_tutorial.engine.result_formats import RECORDED_FORMAT, problems

__all__ = ["main", "records_from_results", "write_recorded", "write_result_file"]


def records_from_results(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The recorded form of result records (what :func:`sam_tutorial.engine.runs.run_one` returns):
    label, seed, configuration hash, tags, final metrics, seconds per epoch, number of processes, and as
    ``history`` the per-epoch step metrics (``history["step"]`` of :func:`sam_tutorial.engine.train.fit`)
    with the per-epoch test accuracy. A value that left the finite numbers (a diverged run) is recorded as
    ``null``: result files hold finite numbers only, and JSON has no NaN."""
    out = []
    for r in records:
        rec = {
            "label": r["label"],
            "seed": r["seed"],
            "config_hash": r["config_hash"],
            "tags": dict(r.get("tags", {})),
            "metrics": _finite_or_none(r["metrics"]),
            "seconds_per_epoch": r.get("timing", {}).get("seconds_per_epoch"),
        }
        if "distributed" in r.get("config", {}):
            rec["distributed"] = dict(r["config"]["distributed"])
        history = r.get("history", {})
        if history.get("step"):
            rec["history"] = {"test_acc": _finite_or_none(history.get("test_acc", [])),
                              **{k: _finite_or_none(v) for k, v in history["step"].items()}}
        out.append(rec)
    return out


def _finite_or_none(values: Any) -> Any:
    """``values`` (a dict or a list) with every non-finite float replaced by ``None``."""
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    if isinstance(values, Mapping):
        return {k: clean(v) for k, v in values.items()}
    return [clean(v) for v in values]


def write_result_file(
    path: str | os.PathLike[str],
    fmt: str,
    body: Mapping[str, Any],
    *,
    command: str,
    device: str,
    wall_seconds: float | None,
    notes: str = "",
    commit: str | None = None,
) -> dict[str, Any]:
    """Write a result file of format ``fmt`` with its provenance (atomically) and return its content: the
    one writer of ``results/`` (recorded runs, :mod:`sam_tutorial.engine.bench`, the timing tool).

    Args:
        path: the JSON file.
        fmt: a format of :data:`sam_tutorial.engine.result_formats.FORMATS`.
        body: the content besides ``format`` and ``provenance``.
        command, device, wall_seconds, notes, commit: see :func:`sam_tutorial.engine.provenance.provenance`.

    Raises:
        ValueError: if the content is invalid for ``fmt`` (or, for recorded runs, does not match the
            catalogue now; see :func:`~sam_tutorial.engine.recorded.check_recorded`); nothing is written then.
    """
    from sam_tutorial.engine.storage import write_json

    content = {k: v for k, v in body.items() if k not in ("format", "provenance")}
    data: dict[str, Any] = {"format": fmt, **content, "provenance": provenance(
        command, device=device, wall_seconds=wall_seconds, notes=notes, commit=commit)}
    bad = problems(data)
    if bad:
        raise ValueError(f"not written: {path}: {'; '.join(bad)}")
    if fmt == RECORDED_FORMAT:
        reason = stale_reason(data)
        if reason is not None:
            raise ValueError(f"not written: {reason}")
    write_json(path, data)
    return data


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
    """Write a recorded file (atomically, through :func:`write_result_file`) and return its content.

    Args:
        path: the JSON file (by convention ``results/<experiment>-<mode>.json``).
        experiment, mode: the catalogue experiment the records claim to be.
        records: recorded records (see :func:`records_from_results`), each with ``label``, ``seed``,
            ``config_hash`` and ``metrics``.
        command: the command that produced them.
        device: where they ran (e.g. ``"cuda: NVIDIA H100"``).
        wall_seconds: the wall time of the runs.
        notes: anything a reader should know.
        commit: the package's git commit (default: :func:`sam_tutorial.engine.provenance.git_commit`).

    Raises:
        ValueError: if a record is invalid or does not match the catalogue now (see
            :func:`~sam_tutorial.engine.recorded.check_recorded`); nothing is written then.
    """
    body = {"experiment": experiment, "mode": mode, "records": [dict(r) for r in records]}
    return write_result_file(path, RECORDED_FORMAT, body, command=command, device=device,
                             wall_seconds=wall_seconds, notes=notes, commit=commit)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sam_tutorial.engine.record NAME --mode MODE [--out runs] --to FILE``: record the
    cached results of an experiment (every run and seed must be finished)."""
    from sam_tutorial import config
    from sam_tutorial.engine.experiments import load_results

    parser = argparse.ArgumentParser(prog="python -m sam_tutorial.engine.record", description=main.__doc__)
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
