"""Command line: ``python -m sam_tutorial {list,run,show,bench} ...``.

.. code-block:: text

    python -m sam_tutorial list                          # experiment names (first column) and descriptions
    python -m sam_tutorial run smoke --mode quick        # train (or load from the cache) and print a table
    python -m sam_tutorial run table1-resnet18-cifar10 --mode paper --seed 0 --device cuda --out runs
    python -m sam_tutorial show m-sweep --mode standard  # the cached results as a table
    python -m sam_tutorial bench --device cpu --json bench.json   # step-time ratios of the SAM family
    python -m sam_tutorial data cifar10                  # fetch, verify and unpack CIFAR-10 for paper mode

Unknown experiment names exit with status 2 and list the valid ones. Installed, the same command is
``sam-tutorial`` (a console script).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sam_tutorial import config

__all__ = ["SUBCOMMANDS", "main"]

Handler = Callable[[argparse.Namespace], int]


def _experiment_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name (see `python -m sam_tutorial list`)")
    parser.add_argument("--mode", choices=config.MODES, default=None,
                        help=f"scale of the experiment (default: ${config.MODE_ENV} or "
                             f"{config.DEFAULT_MODE})")
    parser.add_argument("--seed", type=int, action="append", default=None,
                        help="run only this seed (repeatable; default: the experiment's seeds for the mode)")
    parser.add_argument("--out", default=None, help="output folder (default: $SAM_TUTORIAL_RUNS or ./runs)")


def _unknown(name: str) -> int:
    from sam_tutorial.engine.experiments import EXPERIMENTS

    print(f"error: unknown experiment {name!r}. Valid names:", file=sys.stderr)
    for valid in EXPERIMENTS:
        print(f"  {valid}", file=sys.stderr)
    return 2


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
                             "available)")
    parser.add_argument("--data-root", default=None,
                        help="data folder (default: $SAM_TUTORIAL_DATA or ~/.cache/sam_tutorial)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run(args: argparse.Namespace) -> int:
    import torch

    from sam_tutorial.engine import distributed
    from sam_tutorial.engine.experiments import EXPERIMENTS, run_experiment

    if args.name not in EXPERIMENTS:
        return _unknown(args.name)
    try:  # every usage error before anything is written (no result, checkpoint or lock file)
        device = config.check_device("--device", args.device) if args.device is not None else config.device()
        mode = args.mode or config.mode()
        seeds = _seeds(args)
        out = _out(args)
        world = distributed.launched_world_size()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
                                progress=not args.no_progress, data_root=args.data_root, ctx=ctx)
        if ctx is None or ctx.is_main:
            print(result.table())
    except _file_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if ctx is not None:
            distributed.destroy()
    return 0


def _seeds(args: argparse.Namespace) -> list[int] | None:
    return None if args.seed is None else [config.check_seed("--seed", s) for s in args.seed]


def _out(args: argparse.Namespace) -> str | None:
    from sam_tutorial.engine.runs import runs_root

    runs_root(args.out, name="--out")  # refuses an empty path or a file
    return args.out


def _file_errors() -> tuple[type[Exception], ...]:
    from sam_tutorial.engine.storage import CheckpointError, DataFileError, ResultFileError

    return FileNotFoundError, DataFileError, CheckpointError, ResultFileError


def _show(args: argparse.Namespace) -> int:
    from sam_tutorial.engine.experiments import EXPERIMENTS, load_results

    if args.name not in EXPERIMENTS:
        return _unknown(args.name)
    try:
        seeds, out = _seeds(args), _out(args)
        mode = args.mode or config.mode()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = load_results(args.name, mode=mode, seeds=seeds, out=out)
    except _file_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
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
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    try:
        bench.main(device=args.device, model=args.model, batch=args.batch, json_path=args.json,
                   rounds=args.rounds)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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

    folder = data_root(args.data_root)
    if folder.exists() and not folder.is_dir():
        print(f"error: --data-root {folder} is a file; give a folder", file=sys.stderr)
        return 2
    present = cifar_present(args.name, folder)
    try:
        where = download_cifar(args.name, folder, progress=not args.no_progress)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    done = "already in" if present else "downloaded, checksum verified, unpacked into"
    print(f"{args.name}: {done} {where}")
    return 0


SUBCOMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler], ...] = (
    ("list", "list the experiments (name, then description)", lambda p: None, _list),
    ("run", "run an experiment (cached results are reused, interrupted runs resume)", _configure_run, _run),
    ("show", "print the cached results of an experiment as a table", _experiment_name, _show),
    ("bench", "time one step of every optimizer of the family; print ratios (sam/sgd, ...)",
     _configure_bench, _bench),
    ("data", "fetch a data set of the paper mode (CIFAR-10/100): verified, resumable, unpacked safely",
     _configure_data, _data),
)
"""(name, help, add its arguments, handler) of each subcommand, in the order ``--help`` lists them."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand and return its exit status."""
    parser = argparse.ArgumentParser(prog="python -m sam_tutorial", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, configure, handler in SUBCOMMANDS:
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        configure(sub_parser)
        sub_parser.set_defaults(handler=handler)
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
