"""A GPU smoke of paper mode: a fraction of an epoch of each paper model with every optimizer the paper
and deciding experiments use, timed inside the training loop, written with its provenance so that
chapter 6 and ``sam-tutorial plan`` estimate device-hours from measured times instead of FLOP scaling::

    python tools/paper_smoke.py --device cuda --out sam_tutorial/results/paper-timing-cuda.json
    python tools/paper_smoke.py --device cuda --data-root ~/.cache/sam_tutorial ...   # real CIFAR-10
    OMP_NUM_THREADS=1 python tools/paper_smoke.py --device cpu --quick-models --batch 16 --steps 1 \\
        --warmup 0 --out /tmp/smoke-cpu.json                                   # a CPU check of the tool

For each model (ResNet-18, WRN-28-10, ResNet-50 by default) and each distinct step cost of the catalogue's
paper-mode runs on it (:func:`sam_tutorial.engine.estimate.timing_key`: SGD, SAM, m-SAM at each m and
backend, n-SAM, RW-SAM), the optimizer is built from the run's own configuration
(:func:`~sam_tutorial.engine.train_config.make_optimizer`), fed by the training loader (crop and flip on
the device) on CIFAR-10 if the data folder has it, else on random CIFAR-shaped images, for ``warmup``
steps and then ``steps`` timed steps between two device synchronisations (as an epoch of
:func:`~sam_tutorial.engine.train.fit` runs: no synchronisation per step). The file has the format of
``tools/time_paper_models.py`` (``sam_tutorial.timing/1``) at one batch, so every reader of step times
takes it; with ``--batch`` other than 128, m is scaled to keep the number of micro-batches (a check of
the tool, not a measurement to estimate with).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from typing import Any

import torch

from sam_tutorial.engine import estimate
from sam_tutorial.engine.catalog import deciding
from sam_tutorial.engine.catalog.paper import PAPER_MODELS
from sam_tutorial.engine.data import Dataset, load_dataset
from sam_tutorial.engine.experiments import EXPERIMENTS
from sam_tutorial.engine.loader import BatchLoader
from sam_tutorial.engine.models import build_model
from sam_tutorial.engine.record import write_result_file
from sam_tutorial.engine.result_formats import TIMING_FORMAT
from sam_tutorial.engine.train_config import TrainConfig, cross_entropy, make_optimizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from time_paper_models import flops_per_image  # noqa: E402  (one FLOP count for both timing tools)

ALIASES = {f"m-sam-m{estimate.BATCH // 2}-loop": "m-sam-half-loop"}
"""Keys written twice, under the name chapter 6's older table reads too."""


def paper_configs(model: str, device_type: str = "cuda") -> dict[str, TrainConfig]:
    """Timing key -> the first paper-mode configuration with that step cost on ``model`` on a device of
    ``device_type`` (the paper's tables and the deciding experiments)."""
    names = [n for n in EXPERIMENTS if n.startswith("table")] + list(deciding.DECIDING)
    out: dict[str, TrainConfig] = {}
    for name in names:
        for spec in EXPERIMENTS[name].runs("paper"):
            if spec.tags.get("model") == model:
                out.setdefault(estimate.timing_key(spec.train, device_type), spec.train)
    return dict(sorted(out.items()))


def cifar_or_random(n: int, root: str | None, seed: int = 0) -> tuple[Dataset, str]:
    """``n`` training images of CIFAR-10 from ``root`` if it has them, else random CIFAR-shaped ones."""
    if root is not None:
        try:
            data = load_dataset("cifar10", root, n_train=n, n_test=256)
            if len(data.train[1]) >= n:
                return data, f"CIFAR-10 from {root}"
        except (FileNotFoundError, ValueError):
            pass
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset("cifar10", (x, y), (x[:256], y[:256]), num_classes=10, clean_train_targets=y), \
        "random CIFAR-shaped images"


def at_batch(train: TrainConfig, batch: int) -> TrainConfig:
    """``train`` at another batch size, m scaled to keep the number of micro-batches."""
    m = None if train.m is None else max(1, train.m * batch // train.batch_size)
    return dataclasses.replace(train, batch_size=batch, m=m)


def time_steps(model_name: str, options: dict[str, Any], train: TrainConfig, data: Dataset,
               device: torch.device, warmup: int, steps: int) -> float:
    """Mean seconds per step over ``steps`` steps after ``warmup`` (two synchronisations)."""
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, input_shape=(3, 32, 32), **options).to(device)
    on_device = dataclasses.replace(data, train=(data.train[0].to(device), data.train[1].to(device)))
    opt = make_optimizer(model, train, on_device, seed=0)
    loader = BatchLoader(on_device.train[0], on_device.train[1], train.batch_size, augment=train.augment,
                         device=device, seed=0)
    batches = iter(loader)
    for _ in range(warmup):
        opt.step(*next(batches), cross_entropy)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.step(*next(batches), cross_entropy)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default=",".join(PAPER_MODELS))
    parser.add_argument("--keys", default=None, help="only these timing keys (comma-separated)")
    parser.add_argument("--batch", type=int, default=estimate.BATCH)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per optimizer")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data-root", default=None, help="CIFAR-10 here is used if present")
    parser.add_argument("--quick-models", action="store_true",
                        help="the quick-mode stand-ins (width-8 models): a CPU check of the tool")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.steps < 1 or args.warmup < 0 or args.batch < 1:
        parser.error("need --steps >= 1, --warmup >= 0, --batch >= 1")
    started = time.perf_counter()
    models: dict[str, Any] = {}
    source = ""
    for name in args.models.split(","):
        configs = paper_configs(name, device.type)
        if args.keys is not None:
            configs = {k: v for k, v in configs.items() if k in args.keys.split(",")}
        built, options = (PAPER_MODELS[name][1] if args.quick_models else (name, {}))
        need = max([args.batch * (args.steps + args.warmup)]
                   + [c.nsam_samples or 0 for c in configs.values()])
        data, source = cifar_or_random(need, args.data_root)
        t0 = time.perf_counter()
        seconds = {key: time_steps(built, dict(options), at_batch(c, args.batch), data, device, args.warmup,
                                   args.steps) for key, c in configs.items()}
        seconds |= {alias: seconds[key] for key, alias in ALIASES.items() if key in seconds}
        model = build_model(built, num_classes=10, input_shape=(3, 32, 32), **dict(options)).to(device)
        models[name] = {"parameters": sum(p.numel() for p in model.parameters()),
                        "flops_per_image": flops_per_image(model, device),
                        "seconds_per_step": {str(args.batch): seconds},
                        "measured_seconds": time.perf_counter() - t0}
        print(f"{name}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in seconds.items()), file=sys.stderr)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    write_result_file(
        args.out, TIMING_FORMAT,
        {"batches": [args.batch], "rounds": args.steps, "warmup": args.warmup,
         "threads": torch.get_num_threads() if device.type == "cpu" else None,
         "clock": "wall, device synchronised before and after the timed steps",
         "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
         "models": models},
        command="python tools/paper_smoke.py " + " ".join(sys.argv[1:] if argv is None else argv),
        device=f"{device.type}: {gpu or platform.processor() or platform.machine()}",
        wall_seconds=time.perf_counter() - started,
        notes=f"paper smoke: {source}; each optimizer from a catalogue paper-mode configuration, "
              f"{args.steps} steps after {args.warmup} warm-up steps inside the training loop"
              + ("; quick-mode stand-in models (a check of the tool, not the paper models)"
                 if args.quick_models else ""),
    )
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
