"""``make colab-check``: every chapter runs from the notebook alone, as on Colab.

1. A base virtual environment holds only what a Colab runtime has that matters here: ``torch`` (pinned),
   numpy, matplotlib, ipywidgets, pandas, scipy, tqdm, requests, and ipykernel (Colab's kernel). It is made
   once and reused while its package list is unchanged (a stamp file); ``sam_tutorial`` is never in it.
   Beside it, a wheelhouse with what the bootstrap installs that Colab lacks (mnist1d, and setuptools to
   build the package) is the only package source the notebooks see: they run with ``PIP_NO_INDEX=1``.
2. Each chapter gets a fresh environment of its own layered on the base one (a venv without pip whose
   ``.pth`` adds the base's site-packages), an empty folder holding only the notebook, and a copy of this
   checkout's files (tracked and untracked, not ignored) that ``$SAM_TUTORIAL_INSTALL`` points the bootstrap
   cell at: ``%pip install "sam_tutorial[extras] @ file://<copy>"`` builds and installs the package, as
   ``git+https://...`` does on Colab.
3. The notebook runs with that environment's python as its kernel (nbclient, from the driver's own
   environment), in ``SAM_TUTORIAL_MODE`` (default quick), with nothing of the checkout on its path;
   afterwards the package must have been imported from the chapter's environment.

Prints one line per chapter (status, seconds, seconds of the install cell), writes
``<out>/colab-check.json`` and the executed notebooks, and exits 1 if any chapter failed.

    python tools/colab_check.py --out _build/colab-check [--mode quick] [--jobs 2] [book/01_*.ipynb ...]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbrun import Outcome, run_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLAB_PACKAGES = ("numpy", "matplotlib", "ipywidgets", "pandas", "scipy", "tqdm", "requests", "ipykernel")
"""Colab's usual packages that the chapters or the kernel touch (torch is added with its exact pin)."""
WHEELHOUSE_PACKAGES = ("mnist1d", "setuptools>=77")
"""What the bootstrap cells install beyond Colab's packages: the ``data`` extra, and the build backend."""


def _run(cmd: list[str], **kwargs) -> None:
    subprocess.run(cmd, check=True, **kwargs)


def _ask(py: Path, code: str, **kwargs) -> str:
    """What ``code`` prints when ``py`` runs it (stripped)."""
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True, **kwargs).stdout.strip()


_PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"


def base_environment(folder: Path, torch_pin: str, python: str) -> Path:
    """The base venv in ``folder/venv`` and the wheelhouse in ``folder/wheels``, made unless their stamp
    says they hold this package list already. Returns the base's site-packages."""
    packages = [torch_pin, *COLAB_PACKAGES]
    key = hashlib.sha256(json.dumps([packages, WHEELHOUSE_PACKAGES, python]).encode()).hexdigest()[:12]
    venv, wheels, stamp = folder / "venv", folder / "wheels", folder / f".stamp-{key}"
    if not stamp.exists():
        print(f"colab-check: making the Colab-like base environment in {venv} (once)", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        _run([python, "-m", "venv", str(venv)])
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        _run([*pip, "install", "--quiet", "--no-compile", *packages])  # no .pyc of torch's files: minutes
        _run([*pip, "wheel", "--quiet", "--wheel-dir", str(wheels), *WHEELHOUSE_PACKAGES, "--no-deps"])
        stamp.touch()
    py = venv / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # and run outside the checkout:
    found = _ask(py, "import importlib.util as u; print(u.find_spec('sam_tutorial'))", check=True, cwd=folder,
                 env=clean)
    if found != "None":
        raise SystemExit(f"colab-check: the base environment {venv} has sam_tutorial ({found}); "
                         f"delete {folder} and run again")
    return Path(_ask(py, _PURELIB, check=True))


def layered_environment(folder: Path, base_site: Path, python: str) -> Path:
    """A fresh venv in ``folder`` (no pip of its own) that sees the base's packages; returns its python."""
    _run([python, "-m", "venv", "--without-pip", str(folder)])
    py = folder / "bin" / "python"
    site = _ask(py, _PURELIB, check=True)
    # an "import" line of a .pth file runs: addsitedir also processes the base's own .pth files
    (Path(site) / "_colab_base.pth").write_text(f"import site; site.addsitedir({str(base_site)!r})\n")
    return py


def source_copy(dest: Path) -> Path:
    """This checkout's tracked and untracked (not ignored) files, copied to ``dest``: what a clone holds."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def kernel_env(python: Path, work: Path, install: str, wheels: Path, mode: str) -> dict[str, str]:
    """The kernel's whole environment: a reader's (PATH, HOME, locale), the mode, and pip pointed at the
    local copy and the wheelhouse only. Nothing names the checkout (no PYTHONPATH, no SAM_TUTORIAL_RUNS)."""
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER")}
    env.update(
        PATH=f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
        VIRTUAL_ENV=str(python.parent.parent),
        SAM_TUTORIAL_MODE=mode,
        SAM_TUTORIAL_INSTALL=install,
        SAM_TUTORIAL_DATA=str(work / "data"),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheels),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_CONFIG_FILE=os.devnull,  # the machine's pip configuration (other indexes) does not apply
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        MPLCONFIGDIR=str(work / "mpl"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def check_chapter(notebook: Path, work: Path, base_site: Path, wheels: Path, mode: str, python: str,
                  cell_timeout: int, out: Path) -> Outcome:
    """Run ``notebook`` alone in ``work`` with a fresh layered environment and a fresh copy of the source."""
    py = layered_environment(work / "env", base_site, python)
    src = source_copy(work / "src")
    env = kernel_env(py, work, src.as_uri(), wheels, mode)
    result = run_notebook(notebook, work / "chapter", [str(py), "-m", "ipykernel_launcher"], env,
                          cell_timeout=cell_timeout, keep=out / notebook.name)
    if result.ok:  # the chapter must have used the package its bootstrap installed, not anything else
        where = _ask(py, "import sam_tutorial; print(sam_tutorial.__file__)", env=env, cwd=work / "chapter")
        if not where.startswith(str(work / "env")):
            result.ok, result.error = False, f"sam_tutorial was imported from {where or '?'}, not installed"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every book/*.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "colab-check")
    parser.add_argument("--env", type=Path, default=ROOT / "_build" / "colab-env",
                        help="where the base environment and wheelhouse are kept")
    parser.add_argument("--mode", default="quick", choices=("quick", "standard"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement of the base environment")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter the environments are made from (a venv's python makes them from "
                             "its base interpreter)")
    parser.add_argument("--cell-timeout", type=int, default=600)
    args = parser.parse_args(argv)
    args.env, args.out = args.env.resolve(), args.out.resolve()  # the environments' commands run elsewhere
    notebooks = [p.resolve() for p in (args.notebooks or sorted((ROOT / "book").glob("*.ipynb")))]
    python = str(args.python)
    start = time.perf_counter()
    base_site = base_environment(args.env, args.torch, python)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="colab-check-") as tmp:
        jobs = [(nb, Path(tmp) / nb.stem, base_site, args.env / "wheels", args.mode, python,
                 args.cell_timeout, args.out) for nb in notebooks]
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(check_chapter, *zip(*jobs)))
    total = time.perf_counter() - start
    print(f"{'notebook':<28}{'result':>8}{'seconds':>9}{'install':>9}")
    for r in results:
        install = f"{r.cell_seconds[0]:.0f}" if r.cell_seconds else "-"
        print(f"{r.notebook:<28}{'ok' if r.ok else 'FAILED':>8}{r.seconds:>9.0f}{install:>9}")
        if not r.ok:
            print(f"    {r.error}")
    failed = [r.notebook for r in results if not r.ok]
    print(f"colab-check ({args.mode} mode): {len(results) - len(failed)}/{len(results)} notebooks ran from "
          f"the notebook alone; {total:.0f} s in all with {args.jobs} jobs")
    report = {
        "mode": args.mode, "jobs": args.jobs, "wall_seconds": round(total, 1), "torch": args.torch,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "notebooks": [r.as_dict() for r in results],
    }
    (args.out / "colab-check.json").write_text(json.dumps(report, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
