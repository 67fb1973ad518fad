"""Command line: ``python -m sam_tutorial {list,run,show,bench} ...``.

.. code-block:: text

    python -m sam_tutorial list                          # experiment names (first column) and descriptions
    python -m sam_tutorial run smoke --mode quick        # train (or load from the cache) and print a table
    python -m sam_tutorial run table1-resnet18-cifar10 --mode paper --seed 0 --device cuda --out runs
    python -m sam_tutorial show m-sweep --mode standard  # the cached results as a table
    python -m sam_tutorial plan msweep-resnet18-cifar10 --mode paper --out runs   # runs, cache, GPU-hours
    python -m sam_tutorial run msweep-resnet18-cifar10 --mode paper --launcher submitit-slurm \
        --out $SCRATCH/runs --launcher-option slurm_partition=gpu   # one cluster job per (run, seed)
    python -m sam_tutorial bench --device cpu --json bench.json   # step-time ratios of the SAM family
    python -m sam_tutorial data cifar10                  # fetch, verify and unpack CIFAR-10 for paper mode

Installed, the same command is ``sam-tutorial`` (a console script).

Errors go through one funnel, :func:`main`: a handler (or anything it calls) raises, and ``main`` prints
ONE line ``error: ...`` on stderr, without a traceback, and returns

- **2** for a usage error, as argparse does: a bad flag or value (argparse's own errors included), an
  unknown experiment name (the line lists the valid ones), a bad environment variable, an unusable
  path, a missing extra -- i.e. :class:`sam_tutorial.config.UserError`, any ``ValueError`` of the
  package's argument checks, :class:`sam_tutorial.config.MissingExtra`, and ``OSError`` on a path the
  user named;
- **1** for a file on disk that is missing or broken (a result, checkpoint or data file; the line names
  it and says what to do).

A new subcommand adds a row to ``SUBCOMMANDS`` and raises ``UserError("--flag ...: what to do")``
for its own usage errors; it needs no ``try``/``print`` of its own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from sam_tutorial import config
from sam_tutorial.config import MissingExtra, UserError

__all__ = ["SUBCOMMANDS", "UserError", "main"]

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors go through :func:`main`'s funnel (one ``error:`` line, status 2)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _experiment_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name (see `python -m sam_tutorial list`)")
    parser.add_argument("--mode", choices=config.MODES, default=None,
                        help=f"scale of the experiment (default: ${config.MODE_ENV} or "
                             f"{config.DEFAULT_MODE})")
    parser.add_argument("--seed", type=int, action="append", default=None,
                        help="run only this seed (repeatable; default: the experiment's seeds for the mode)")
    parser.add_argument("--out", default=None, help="output folder (default: $SAM_TUTORIAL_RUNS or ./runs)")


def _check_name(name: str) -> None:
    from sam_tutorial.engine.experiments import EXPERIMENTS

    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}; valid names: {', '.join(EXPERIMENTS)} "
                        "(descriptions: `python -m sam_tutorial list`)")


def _list(args: argparse.Namespace) -> int:
    from sam_tutorial.engine.experiments import list_experiments

    rows = list_experiments()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def _configure_run(parser: argparse.ArgumentParser) -> None:
    _experiment_name(parser)
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu, cuda, cuda:1 (default: $SAM_TUTORIAL_DEVICE or CUDA if "
                             "available; with --launcher: cuda, the nodes' device)")
    parser.add_argument("--data-root", default=None,
                        help="data folder (default: $SAM_TUTORIAL_DATA or ~/.cache/sam_tutorial)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    group = parser.add_argument_group("launcher (many runs on many GPUs; needs the cluster extra)")
    group.add_argument("--launcher", choices=("submitit-slurm", "submitit-local", "submitit-debug"),
                       default=None, help="hand each (run, seed) to a job system through submitit instead of "
                                          "training here; results go to --out (shared by the nodes)")
    group.add_argument("--launcher-option", action="append", default=[], metavar="KEY=VALUE",
                       help="a submitit parameter (repeatable), e.g. slurm_partition=gpu, timeout_min=720, "
                            "cpus_per_task=8")
    group.add_argument("--gpus-per-run", type=int, default=1,
                       help="GPUs (tasks) per run; more than one trains each run under DDP (default 1)")
    group.add_argument("--detach", action="store_true",
                       help="submit and return without waiting (submitit-slurm only); gather later with "
                            "`show`")


def _launched(args: argparse.Namespace) -> int:
    """``run --launcher ...``: one job per (run, seed) through submitit (sam_tutorial.engine.launch)."""
    from sam_tutorial.engine import launch

    # usage errors before anything is submitted
    seeds, out, data_root = _seeds(args), _out(args), _data_root(args)
    mode = args.mode or config.mode()
    device = args.device or "cuda"  # the nodes' device, not this machine's (a login node may have none)
    options = launch.parse_options(args.launcher_option)
    config.check_int("--gpus-per-run", args.gpus_per_run)
    done = launch.launch(args.name, launcher=args.launcher, mode=mode, seeds=seeds, out=out, device=device,
                         data_root=data_root, options=options, gpus_per_run=args.gpus_per_run,
                         wait=not args.detach)
    print(f"# {args.name} ({mode} mode): {len(done.jobs)} jobs submitted, {len(done.cached)} runs cached; "
          f"job logs in {done.folder}", file=sys.stderr)
    if done.failed:
        print(f"error: {len(done.failed)} jobs failed: " + "; ".join(
            f"{label} seed {seed}: {why}" for (label, seed), why in done.failed.items()), file=sys.stderr)
        return 1
    if done.result is not None:
        print(done.result.table())
    else:
        print(f"gather the results with `python -m sam_tutorial show {args.name} --mode {mode}"
              + (f" --out {args.out}" if args.out else "") + "`")
    return 0


def _configure_plan(parser: argparse.ArgumentParser) -> None:
    _experiment_name(parser)
    parser.add_argument("--results", default=None,
                        help="folder of recorded results and step-time files (default: results/ of the "
                             "working directory, else the package's; step times also from the package's)")
    parser.add_argument("--timing", default=None,
                        help="a step-time file to estimate with (tools/paper_smoke.py, "
                             "tools/time_paper_models.py or bench JSON; default: the best CUDA times in "
                             "--results)")
    parser.add_argument("--gpus-per-run", type=int, default=1,
                        help="GPUs per run under DDP (the cache keys depend on it; default 1)")


def _plan(args: argparse.Namespace) -> int:
    """``plan``: the runs, which are cached / recorded / resumable, and the device-hours still needed."""
    from pathlib import Path

    from sam_tutorial.engine import estimate
    from sam_tutorial.engine.plan import plan_experiment
    from sam_tutorial.engine.recorded import packaged_results, results_folder

    _check_name(args.name)
    seeds, out = _seeds(args), _out(args)
    mode = args.mode or config.mode()
    config.check_int("--gpus-per-run", args.gpus_per_run)
    results: Path | None = Path(args.results) if args.results is not None else None
    if results is None:
        try:
            results = results_folder()
        except FileNotFoundError:
            results = None
    elif not results.is_dir():
        raise UserError(f"--results {args.results} is not a folder; give the folder of recorded results "
                        "(results/)")
    times: estimate.StepTimes | None
    if args.timing is not None:
        if not Path(args.timing).is_file():
            raise UserError(f"--timing {args.timing} is not a file; give a step-time JSON "
                            "(tools/paper_smoke.py writes one)")
        try:
            times = estimate.read_step_times(args.timing)
        except (ValueError, KeyError, TypeError) as err:  # ResultFileError is a ValueError
            reason = ("not JSON" if "JSON" in str(err) else "not a step-time format" if "holds no step times"
                      in str(err) else f"{type(err).__name__}: {err}")
            raise UserError(f"--timing {args.timing} holds no step times ({reason}); give a file written by "
                            "tools/paper_smoke.py, tools/time_paper_models.py or `bench --json`") from None
    else:
        times = estimate.device_step_times([f for f in (results, packaged_results()) if f is not None])
    plan = plan_experiment(args.name, mode=mode, seeds=seeds, out=out, results=results, times=times,
                           world_size=args.gpus_per_run)
    print(plan.table())
    return 0


def _run(args: argparse.Namespace) -> int:
    import torch

    from sam_tutorial.engine import distributed
    from sam_tutorial.engine.experiments import run_experiment

    # every usage error before anything is written (no result, checkpoint or lock file)
    _check_name(args.name)
    if args.launcher is not None:
        return _launched(args)
    if args.detach or args.launcher_option or args.gpus_per_run != 1:
        raise UserError("--launcher-option, --gpus-per-run and --detach need --launcher (e.g. --launcher "
                        "submitit-local)")
    device = config.check_device("--device", args.device) if args.device is not None else config.device()
    mode = args.mode or config.mode()
    seeds = _seeds(args)
    out = _out(args)
    data_root = _data_root(args)
    world = distributed.launched_world_size()
    ctx = None
    if world > 1:  # under torchrun: one process per device; rank 0 alone writes results and prints
        ctx = distributed.init_from_env(device=device.type)
        device = ctx.device
    try:
        if ctx is None or ctx.is_main:
            size = f" world_size={ctx.world_size}" if ctx is not None else ""
            print(f"# {args.name}: mode={mode} device={device}{size} torch={torch.__version__}",
                  file=sys.stderr)
        result = run_experiment(args.name, mode=mode, seeds=seeds, out=out, device=device,
                                progress=not args.no_progress, data_root=data_root, ctx=ctx)
        if ctx is None or ctx.is_main:
            print(result.table())
    finally:
        if ctx is not None:
            distributed.destroy()
    return 0


def _seeds(args: argparse.Namespace) -> list[int] | None:
    if args.seed is None:
        return None
    seeds = [config.check_seed("--seed", s) for s in args.seed]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seed {', '.join(map(str, repeated))} given more than once; a seed counts once "
                        "in every mean: give each seed once")
    return seeds


def _data_root(args: argparse.Namespace) -> str | None:
    root = getattr(args, "data_root", None)
    if root is not None and not root.strip():
        raise UserError("--data-root '' names no folder (it would put the data cache in the working "
                        "directory); give a folder, or leave the flag out for $SAM_TUTORIAL_DATA or "
                        "~/.cache/sam_tutorial")
    if root is not None:
        config.check_folder("--data-root", root)
    return root


def _out(args: argparse.Namespace) -> str | None:
    from sam_tutorial.engine.runs import runs_root

    root = runs_root(args.out, name="--out")  # refuses an empty path or a file
    config.check_folder("--out" if args.out is not None else "$SAM_TUTORIAL_RUNS", root,
                        writable=args.handler is _run)
    return args.out


def _file_errors() -> tuple[type[Exception], ...]:
    """A file on disk missing or broken: exit status 1 (the message names the file)."""
    from sam_tutorial.engine.storage import CheckpointError, DataFileError, ResultFileError

    return FileNotFoundError, DataFileError, CheckpointError, ResultFileError


USAGE_ERRORS: tuple[type[Exception], ...] = (ValueError, MissingExtra, OSError)
"""Exit status 2: ``UserError`` and the package's other argument checks (``ValueError``), a missing
extra, a path the user named that cannot be used (``OSError``: permission, not a folder, ...)."""


def _show(args: argparse.Namespace) -> int:
    from sam_tutorial.engine.experiments import load_results

    _check_name(args.name)
    seeds, out = _seeds(args), _out(args)
    mode = args.mode or config.mode()
    result = load_results(args.name, mode=mode, seeds=seeds, out=out)
    exp = result.experiment
    print(f"# {exp.name} ({result.mode} mode): {exp.description}")
    if exp.notes:
        print(f"# {exp.notes}")
    if not result.records:
        print(f"no cached results for {exp.name!r} in {result.mode} mode; "
              f"run `python -m sam_tutorial run {exp.name} --mode {result.mode}` first", file=sys.stderr)
        return 1
    print(result.table())
    if result.missing:
        print("not run yet: " + ", ".join(f"{label} (seed {seed})" for label, seed in result.missing),
              file=sys.stderr)
    return 0


def _configure_bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: CUDA when available, else the CPU")
    parser.add_argument("--model", default=None,
                        help="resnet18, resnet18-w16, wrn16-4, cnn1d or mlp (default: resnet18 on CUDA, "
                             "resnet18-w16 on the CPU)")
    parser.add_argument("--batch", type=int, default=128, help="batch size B (default 128)")
    parser.add_argument("--rounds", type=int, default=10, help="timed steps per variant (default 10)")
    parser.add_argument("--json", default=None, help="also write the result as JSON to this path")


def _bench(args: argparse.Namespace) -> int:
    import torch

    from sam_tutorial.engine import bench

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but CUDA is not available on this machine; use --device cpu")
    if args.json is not None:  # before the timed steps, not after them
        json_path = Path(args.json).expanduser()
        if json_path.is_dir() or not args.json.strip():
            raise UserError(f"--json {args.json!r} is a folder; give a file path, e.g. bench.json")
        config.check_folder("--json's folder", json_path.parent, writable=True)
    bench.main(device=args.device, model=args.model, batch=args.batch, json_path=args.json,
               rounds=args.rounds)
    return 0


def _configure_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=("cifar10", "cifar100"), help="the data set to fetch")
    parser.add_argument("--data-root", default=None,
                        help="data folder (default: $SAM_TUTORIAL_DATA or ~/.cache/sam_tutorial)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _data(args: argparse.Namespace) -> int:
    from sam_tutorial.engine.cifar import cifar_present, download_cifar
    from sam_tutorial.engine.data import data_root
    from sam_tutorial.engine.download import DownloadError

    folder = config.check_folder("--data-root" if args.data_root is not None else f"${config.DATA_ENV}",
                                 data_root(_data_root(args)), writable=True)
    present = cifar_present(args.name, folder)
    try:
        where = download_cifar(args.name, folder, progress=not args.no_progress)
    except DownloadError as err:  # the network or the archive, not the command line: status 1
        return _error(err, 1)
    done = "already in" if present else "downloaded, checksum verified, unpacked into"
    print(f"{args.name}: {done} {where}")
    return 0


SUBCOMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler], ...] = (
    ("list", "list the experiments (name, then description)", lambda p: None, _list),
    ("run", "run an experiment (cached results are reused, interrupted runs resume)", _configure_run, _run),
    ("show", "print the cached results of an experiment as a table", _experiment_name, _show),
    ("plan", "list the runs of an experiment, which are cached or recorded, and the device-hours left",
     _configure_plan, _plan),
    ("bench", "time one step of every optimizer of the family; print ratios (sam/sgd, ...)",
     _configure_bench, _bench),
    ("data", "fetch a data set of the paper mode (CIFAR-10/100): verified, resumable, unpacked safely",
     _configure_data, _data),
)
"""(name, help, add its arguments, handler) of each subcommand, in the order ``--help`` lists them."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand and return its exit status.

    The error funnel of the module docstring: a usage error is one ``error:`` line and status 2, a
    missing or broken file one ``error:`` line and status 1; ``--help`` exits 0 as usual.
    """
    parser = _Parser(prog="python -m sam_tutorial", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, configure, handler in SUBCOMMANDS:
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        configure(sub_parser)
        sub_parser.set_defaults(handler=handler)
    try:
        args = parser.parse_args(argv)
        status: int = args.handler(args)
    except _file_errors() as err:
        return _error(err, 1)
    except USAGE_ERRORS as err:
        return _error(err, 2)
    return status


def _error(err: BaseException, status: int) -> int:
    """Print ``err`` as one line ``error: ...`` on stderr and return ``status``."""
    message = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in message:
        message = f"{err.filename}: {message}"
    print(f"error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
