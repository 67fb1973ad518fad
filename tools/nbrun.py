"""Execute one notebook in a folder of its own with a chosen interpreter as its kernel (nbclient), and say how
long it took and what failed. Shared by tools/colab_check.py (a Colab-like environment) and
tools/gpu_book.py (a GPU machine's own python3).

The driver (this module) needs nbclient, nbformat and jupyter_client; the kernel's interpreter needs only
ipykernel, so the environment the notebook sees holds nothing of the executor.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "run_notebook"]


@dataclass
class Outcome:
    """What became of one notebook: ``ok``, the wall seconds, the seconds of each code cell (in order), and
    the error (the failing cell's first line and the exception's last lines) when not ok."""

    notebook: str
    ok: bool
    seconds: float
    cell_seconds: list[float] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cell_seconds(nb: Any) -> list[float]:
    """Seconds of every executed code cell, from the timing nbclient records in its metadata."""
    from datetime import datetime

    out = []
    for cell in nb.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if cell.cell_type == "code" and start and end:
            t0, t1 = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end))
            out.append((t1 - t0).total_seconds())
    return out


def _error_text(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    head = next((line for line in lines if not line.startswith("-")), "")
    return " | ".join([head, *lines[-3:]]) if lines else repr(err)


def run_notebook(source: Path, folder: Path, kernel_argv: Sequence[str], env: Mapping[str, str], *,
                 cell_timeout: int, keep: Path | None = None) -> Outcome:
    """Copy ``source`` alone into ``folder`` and execute it there.

    Args:
        source: the notebook.
        folder: an empty folder, the kernel's working directory.
        kernel_argv: the kernel command before ``-f {connection_file}``, e.g. ``[python, "-m",
            "ipykernel_launcher"]``.
        env: the kernel's whole environment (nothing else of the caller's is passed on).
        cell_timeout: seconds one cell may run.
        keep: where to write the executed notebook (with outputs), if anywhere.
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty; each notebook runs alone in an empty folder")
    copy = folder / source.name
    copy.write_bytes(source.read_bytes())
    specs = folder.parent / f".kernels-{source.stem}"
    (specs / "run").mkdir(parents=True, exist_ok=True)
    argv = [*kernel_argv, "-f", "{connection_file}"]
    (specs / "run" / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "run",
                                                            "language": "python", "env": dict(env)}))
    km = KernelManager(kernel_name="run", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(nb, km=km, timeout=cell_timeout, kernel_name="run",
                            resources={"metadata": {"path": str(folder)}})
    start = time.perf_counter()
    error = ""
    saved = dict(os.environ)
    os.environ.clear()  # the kernel inherits the driver's environment under kernel.json's env: empty it
    os.environ.update(env)
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError, RuntimeError, OSError) as err:
        error = _error_text(err)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    seconds = time.perf_counter() - start
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, keep)
    return Outcome(source.name, not error, round(seconds, 1), [round(s, 2) for s in _cell_seconds(nb)], error)
