"""``make gpu-book``: execute every chapter in standard mode on CUDA and record how long each took.

Runs with the GPU machine's own interpreter (``PY=python3``: its CUDA torch), the package imported from this
checkout (``PYTHONPATH``); that interpreter needs ipykernel, nbclient, matplotlib, ipywidgets and mnist1d,
and a preflight names any that are missing instead of failing half-way. Each notebook runs alone in an empty
folder (as on Colab) with ``SAM_TUTORIAL_DEVICE`` set, one after another (one GPU). The result file holds
the outcome and seconds of every chapter (and of each cell) with provenance: date, commit, device name,
torch and CUDA versions, mode and command. The exit status is 1 if any chapter failed.

    python3 tools/gpu_book.py --json _build/gpu-book/gpu-book.json [--device cuda] [--mode standard]

The same code runs on the CPU (``--device cpu``); the tests exercise it there on small notebooks.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbrun import Outcome, run_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("torch", "numpy", "tqdm", "IPython", "ipykernel", "nbclient", "nbformat", "matplotlib",
          "ipywidgets", "mnist1d")
"""What the interpreter must have: the package's core, the notebook extras, the data extra and the kernel."""


def provenance(device: str, mode: str, argv: list[str]) -> dict[str, Any]:
    """Where and how the chapters ran."""
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else \
        platform.processor() or platform.machine()
    return {
        "command": " ".join(["python3", "tools/gpu_book.py", *argv]),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"{device} ({name})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "mode": mode,
    }


def missing_modules(device: str) -> list[str]:
    """The modules of :data:`NEEDED` this interpreter lacks, and ``cuda`` if the device is CUDA without it."""
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if device.startswith("cuda") and "torch" not in missing:
        import torch

        if not torch.cuda.is_available():
            missing.append("cuda (torch.cuda.is_available() is False)")
    return missing


def kernel_env(device: str, mode: str, work: Path) -> dict[str, str]:
    """The caller's environment, the package importable from this checkout, the mode and the device."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(SAM_TUTORIAL_MODE=mode, SAM_TUTORIAL_DEVICE=device, SAM_TUTORIAL_RUNS=str(work / "runs"),
               MPLBACKEND="agg")
    return env


def write_result(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as JSON, atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: book/*.ipynb but the template")
    parser.add_argument("--json", type=Path, default=ROOT / "_build" / "gpu-book" / "gpu-book.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--mode", default="standard", choices=("quick", "standard"))
    parser.add_argument("--cell-timeout", type=int, default=300)
    args = parser.parse_args(argv)
    chapters = [p for p in sorted((ROOT / "book").glob("*.ipynb")) if not p.name.startswith("_")]
    notebooks = args.notebooks or chapters
    missing = missing_modules(args.device)
    result: dict[str, Any] = {"format": "sam_tutorial.gpu-book/1", "notebooks": [], "missing": missing}
    if "torch" not in missing:
        result["provenance"] = provenance(args.device, args.mode, argv)
    if missing:
        result["error"] = f"this interpreter ({sys.executable}) lacks: {', '.join(missing)}"
        write_result(args.json, result)
        print(f"error: {result['error']}; nothing was run (result in {args.json})", file=sys.stderr)
        return 1
    start = time.perf_counter()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="gpu-book-") as tmp:
        for nb in notebooks:
            work = Path(tmp) / Path(nb).stem
            kernel = [sys.executable, "-m", "ipykernel_launcher"]
            outcome = run_notebook(Path(nb).resolve(), work / "chapter", kernel,
                                   kernel_env(args.device, args.mode, work), cell_timeout=args.cell_timeout,
                                   keep=args.json.parent / Path(nb).name)
            outcomes.append(outcome)
            print(f"{outcome.notebook:<28}{'ok' if outcome.ok else 'FAILED':>8}{outcome.seconds:>8.0f} s"
                  + (f"\n    {outcome.error}" if outcome.error else ""), flush=True)
            result["notebooks"] = [o.as_dict() for o in outcomes]
            write_result(args.json, result)  # after each chapter: a later crash keeps what was measured
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_result(args.json, result)
    failed = [o.notebook for o in outcomes if not o.ok]
    ran = f"{len(outcomes) - len(failed)}/{len(outcomes)}"
    print(f"gpu-book ({args.mode} mode, {args.device}): {ran} chapters ran in "
          f"{result['wall_seconds']:.0f} s; result in {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
