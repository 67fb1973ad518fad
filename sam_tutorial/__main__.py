"""Command line: ``python -m sam_tutorial {list,run,show,bench} ...``.

.. code-block:: text

    python -m sam_tutorial list                          # experiment names (first column) and descriptions
    python -m sam_tutorial run smoke --mode quick        # train (or load from the cache) and print a table
    python -m sam_tutorial run table1-resnet18-cifar10 --mode paper --seed 0 --device cuda --out runs
    python -m sam_tutorial show m-sweep --mode standard  # the cached results as a table
    python -m sam_tutorial plan msweep-resnet18-cifar10 --mode paper --out runs   # runs, cache, GPU-hours
    python -m sam_tutorial run msweep-resnet18-cifar10 --mode paper --launcher submitit-slurm \
        --out /shared/runs --launcher-option slurm_partition=gpu   # one cluster job per (run, seed)
    python -m sam_tutorial bench --device cpu --json bench.json   # step-time ratios of the SAM family

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

    try:  # usage errors before anything is submitted
        seeds, out = _seeds(args), _out(args)
        mode = args.mode or config.mode()
        device = args.device or config.device().type
        options = launch.parse_options(args.launcher_option)
        config.check_int("--gpus-per-run", args.gpus_per_run)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        done = launch.launch(args.name, launcher=args.launcher, mode=mode, seeds=seeds, out=out,
                             device=device, data_root=args.data_root, options=options,
                             gpus_per_run=args.gpus_per_run, wait=not args.detach)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except _file_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
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
                             "working directory or of the package's repository)")
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
    from sam_tutorial.engine.experiments import EXPERIMENTS
    from sam_tutorial.engine.plan import plan_experiment
    from sam_tutorial.engine.recorded import results_folder

    if args.name not in EXPERIMENTS:
        return _unknown(args.name)
    try:
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
            raise ValueError(f"--results {args.results} is not a folder")
        times: estimate.StepTimes | None
        if args.timing is not None:
            times = estimate.read_step_times(args.timing)
        else:
            times = estimate.device_step_times(results) if results is not None else None
        plan = plan_experiment(args.name, mode=mode, seeds=seeds, out=out, results=results, times=times,
                               world_size=args.gpus_per_run)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(plan.table())
    return 0


def _run(args: argparse.Namespace) -> int:
    import torch

    from sam_tutorial.engine import distributed
    from sam_tutorial.engine.experiments import EXPERIMENTS, run_experiment

    if args.name not in EXPERIMENTS:
        return _unknown(args.name)
    if args.launcher is not None:
        return _launched(args)
    if args.detach or args.launcher_option or args.gpus_per_run != 1:
        print("error: --launcher-option, --gpus-per-run and --detach need --launcher", file=sys.stderr)
        return 2
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


SUBCOMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler], ...] = (
    ("list", "list the experiments (name, then description)", lambda p: None, _list),
    ("run", "run an experiment (cached results are reused, interrupted runs resume)", _configure_run, _run),
    ("show", "print the cached results of an experiment as a table", _experiment_name, _show),
    ("plan", "list the runs of an experiment, which are cached or recorded, and the device-hours left",
     _configure_plan, _plan),
    ("bench", "time one step of every optimizer of the family; print ratios (sam/sgd, ...)",
     _configure_bench, _bench),
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
