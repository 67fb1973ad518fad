"""Time one training step of each paper model (ResNet-18, ResNet-50, WRN-28-10) on CIFAR-shaped synthetic
data for SGD, SAM, m-SAM (two micro-batches, as m = 64 of a batch of 128) and RW-SAM, count the FLOPs of
one forward+backward per image, and write the result with its provenance for chapter 6::

    OMP_NUM_THREADS=1 .venv/bin/python tools/time_paper_models.py --device cpu --batches 4,8 \\
        --out sam_tutorial/results/paper-timing-cpu.json
    .venv/bin/python tools/time_paper_models.py --device cuda --batches 64,128 --rounds 5 \\
        --out sam_tutorial/results/paper-timing-cuda.json

On a CPU two small batches keep the measurement to a few minutes, and the clock is the process's CPU time
(one thread), so that other processes on a shared machine do not inflate it. The chapter fits
t = a + b * batch to the two batch sizes (a: per-step costs such as the probe and the parameter update;
b: per image), evaluates it at the paper's batch of 128 and scales to an epoch of 50,000 images
(augmentation, data loading and evaluation are not included).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from sam_tutorial import MSAM, RWSAM, SAM
from sam_tutorial.engine import cost
from sam_tutorial.engine.catalog.paper import PAPER_MODELS
from sam_tutorial.engine.models import build_model
from sam_tutorial.engine.record import write_result_file
from sam_tutorial.engine.result_formats import TIMING_FORMAT

CE = torch.nn.CrossEntropyLoss(reduction="none")
PAPER_BATCH = 128  # the paper's batch size, which the chapter extrapolates the timed batches to


def factories(batch: int, backends: tuple[str, ...]) -> dict[str, Callable[[torch.nn.Module], Any]]:
    """SGD, SAM, m-SAM with B/m = 2, RW-SAM; SGD with momentum as the base.

    m-SAM is timed at m = B/2 of each timed batch B and labelled by the configuration the fit over B
    extrapolates to: the paper's m = 64 of its batch of 128 (``m-sam-m64-loop``).
    """

    def base(model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    out: dict[str, Callable[[torch.nn.Module], Any]] = {
        "sgd": lambda model: SAM(model, base(model), rho=0.0),
        "sam": lambda model: SAM(model, base(model), rho=0.05),
        "rw-sam": lambda model: RWSAM(model, base(model), rho=0.05, lam=0.1, delta=0.01, seed=0),
    }
    for backend in backends:
        out[f"m-sam-m{PAPER_BATCH // 2}-{backend}"] = lambda model, backend=backend: MSAM(
            model, base(model), rho=0.05, m=batch // 2, backend=backend
        )
    return out


def flops_per_image(model: torch.nn.Module, device: torch.device) -> float:
    """FLOPs of one forward and backward pass of one image (torch's flop counter, train mode)."""
    x = torch.randn(2, 3, 32, 32, device=device)
    y = torch.zeros(2, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--batches",
        default="4,8",
        help="batch sizes timed (comma-separated); the chapter fits t = a + b * batch",
    )
    parser.add_argument("--rounds", type=int, default=1, help="timed steps per optimizer")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--backends", default="loop", help="m-SAM backends, comma-separated (loop,vmap)")
    parser.add_argument("--models", default=",".join(PAPER_MODELS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    # on a shared CPU the wall clock measures the other processes too: count this process's CPU time
    # (with one thread it is the time the step would take on an idle core); a GPU needs the wall clock
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    started = time.perf_counter()
    models = {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(name, num_classes=10, input_shape=(3, 32, 32)).to(device)
        flops = flops_per_image(model, device)
        t0 = time.perf_counter()
        per_batch = {}
        for batch in batches:
            x = torch.randn(batch, 3, 32, 32, device=device)
            y = torch.randint(0, 10, (batch,), device=device)
            times = cost.step_times(
                factories(batch, tuple(args.backends.split(","))),
                model,
                x,
                y,
                CE,
                steps=1,
                repeats=args.rounds,
                warmup=args.warmup,
                cpu_threads=None,
                clock=clock,
            )
            per_batch[str(batch)] = {k: float(np.median(v)) for k, v in times.items()}
        models[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "flops_per_image": flops,
            "seconds_per_step": per_batch,
            "measured_seconds": time.perf_counter() - t0,
        }
        print(f"{name}: {per_batch}", file=sys.stderr)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    write_result_file(
        args.out,
        TIMING_FORMAT,
        {
            "batches": batches,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "clock": "process_time (CPU seconds of this process)" if device.type == "cpu" else "wall",
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "models": models,
        },
        command="python tools/time_paper_models.py " + " ".join(sys.argv[1:] if argv is None else argv),
        device=f"{device.type}: {gpu or platform.processor() or platform.machine()}",
        wall_seconds=time.perf_counter() - started,
        notes="synthetic CIFAR-shaped batch; one step per optimizer on its own copy of the model; "
        "m-SAM with m = batch/2 (two micro-batches, as m = 64 of the paper's 128)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
