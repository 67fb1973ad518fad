"""Where a result file comes from, in one shape for every file under ``results/``.

Every file there (recorded catalogue runs, benchmarks, timings) carries a ``format`` tag and a
``provenance`` object with the keys of :data:`PROVENANCE_KEYS`::

    {"command": "sam-tutorial bench --device cpu --json ...",   # what produced it
     "commit": "3f23d71c2a9e",                                   # the package's git commit (+dirty)
     "package": {"sam_tutorial": "0.1.0", "torch": "2.13.0+cpu", "numpy": ..., "python": ..., ...},
     "device": "cpu: x86_64", "date": "2026-11-30T12:17:06Z", "wall_seconds": 412.5, "notes": "..."}

:func:`provenance` builds it; :func:`sam_tutorial.engine.record.write_result_file` writes a file with it
and :func:`sam_tutorial.engine.recorded.read_result` checks it (book: appendix, "Recorded results").

>>> p = provenance("python -m x", device="cpu", wall_seconds=1.5, commit="abc")
>>> sorted(p) == sorted(PROVENANCE_KEYS + ("notes",)) and p["package"]["torch"] == torch.__version__
True
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["PROVENANCE_KEYS", "git_commit", "provenance", "versions"]

PROVENANCE_KEYS = ("command", "commit", "package", "device", "date", "wall_seconds")
"""What every result file's ``provenance`` holds (``package`` names at least ``sam_tutorial`` and
``torch``; ``wall_seconds`` may be ``null`` for a file recorded before it was measured)."""


def versions() -> dict[str, str]:
    """Versions of the software that produced a result: the package, torch, NumPy, Python, platform."""
    from sam_tutorial import __version__

    return {
        "sam_tutorial": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
    }


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


def provenance(
    command: str,
    *,
    device: str,
    wall_seconds: float | None,
    notes: str = "",
    commit: str | None = None,
    date: str | None = None,
) -> dict[str, Any]:
    """The ``provenance`` object of a result file.

    Args:
        command: the command that produced the result.
        device: where it ran (e.g. ``"cuda: NVIDIA H100"``, ``"cpu: x86_64"``).
        wall_seconds: the wall time it took (``None``: not measured).
        notes: anything a reader should know (the machine's load, what differs from the catalogue ...).
        commit: the package's commit (default: :func:`git_commit`).
        date: ISO date and time in UTC (default: now).
    """
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "command": str(command),
        "commit": commit if commit is not None else git_commit(),
        "package": versions(),
        "device": str(device),
        "date": date or now,
        "wall_seconds": None if wall_seconds is None else float(wall_seconds),
        "notes": notes,
    }
