"""Step-time benchmark of the SAM family, reported as ratios measured in one run.

Every variant trains its own copy of the same model on the same batch; after a warm-up, the variants
take turns step by step (interleaved rounds, so that drifts in machine load hit all of them alike) and
each variant's median step time is kept. Ratios, not seconds, are the result: ``sam/sgd`` (physical
limit about 2: two forward and two backward passes), ``rw-sam/sam`` (about 7/6: one extra forward),
``rw-sam-exact/sam`` (RW-SAM with the exact forward-mode score: pass 1 is one dual forward),
``m-sam-m16-loop/sam`` and ``m-sam-m16-vmap/sam`` (the same arithmetic as SAM, in B/m pieces), ...

Next to the times, the operators one step dispatches (:func:`sam_tutorial.engine.cost.count_ops`):
kernels (a proxy for GPU kernel launches, independent of machine load) and host synchronisations, for
every variant and for SAM with a ``GradScaler``; ``op_ratios`` divides the kernels by SAM's.

The cost of ``trace_V`` over N samples is reported relative to one forward+backward over them.

Run it as ``python -m sam_tutorial bench`` (or ``make bench``); see :func:`run`.
"""


from __future__ import annotations

import copy
import functools
import inspect
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sam_tutorial.engine import cost
from sam_tutorial.engine.cost import Factory
from sam_tutorial.optim.variants import REGISTRY, label

__all__ = [
    "CE",
    "GOALS",
    "PRESETS",
    "ProbeForward",
    "best_msam",
    "default_model",
    "find_results",
    "format_table",
    "main",
    "markdown_table",
    "op_counts",
    "ratios",
    "run",
    "time_steps",
    "trace_v_cost",
    "variants",
]




CE = nn.CrossEntropyLoss(reduction="none")


def variants(
    batch_size: int, ms: tuple[int, ...], backends: tuple[str, ...], nsam_data: tuple[Tensor, Tensor]
) -> dict[str, Factory]:
    """The optimizers to time, by label, read from the variant registry (``optim.variants.REGISTRY``):
    every variant marked ``benchmark`` at rho = 0.05, once per example configuration (``rw-sam``,
    ``rw-sam-exact``), the variants with a micro-batch size as ``m-sam-m{m}-{backend}`` for every m of
    ``ms`` dividing ``batch_size``; a variant that takes ``data`` gets ``nsam_data``."""
    out: dict[str, Factory] = {}
    for v in REGISTRY.values():
        if not v.benchmark:
            continue
        if "m" in v.settings:
            for m in ms:
                if batch_size % m == 0:
                    for backend in backends:
                        out[label(v.name, m=m, backend=backend)] = functools.partial(
                            v.make, rho=0.05, m=m, backend=backend)
            continue
        extra: dict[str, Any] = {}
        if "data" in v.settings:
            extra["data"] = nsam_data
            if "chunk_size" in inspect.signature(v.cls.__init__).parameters:
                extra["chunk_size"] = batch_size
        for suffix, settings in v.examples.items():
            out[v.label(suffix)] = functools.partial(v.make, rho=0.05, **settings, **extra)
    return out


class ProbeForward:
    """One forward without gradient in train mode: what RW-SAM adds to SAM (its probe at w + δu).

    Timed beside the variants, ``probe-forward/sam`` gives RW-SAM's floor: ``rw-sam/sam`` cannot be
    below ``1 + probe-forward/sam`` (three forwards and two backwards against two and two).
    """

    def __init__(self, model: nn.Module, base: torch.optim.Optimizer) -> None:
        self.model = model

    def step(self, inputs: Tensor, targets: Tensor, loss_fn: Callable[..., Tensor]) -> Tensor:
        with torch.inference_mode():
            return loss_fn(self.model(inputs), targets)


def _with_sgd_base(factory: Factory, foreach: bool | None = None) -> Callable[[nn.Module], Any]:
    """The factory with SGD (momentum 0.9) as the base optimizer (``foreach``: torch's choice if None)."""
    return lambda model: factory(
        model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=foreach))


def time_steps(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    factories: dict[str, Factory],
    *,
    rounds: int = 10,
    warmup: int = 2,
) -> dict[str, float]:
    """Median seconds per step of each optimizer over ``rounds`` interleaved steps after ``warmup``.

    The timing itself is :func:`sam_tutorial.engine.cost.step_times` (one step per repeat, each variant on
    its own copy of ``model``, SGD with momentum 0.9 as the base, the machine's thread count kept).

    Raises:
        ValueError: if ``rounds`` or ``warmup`` is out of range.
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    with_base = {name: _with_sgd_base(f) for name, f in factories.items()}
    per_round = cost.step_times(with_base, model, inputs, targets, CE, steps=1, repeats=rounds,
                                warmup=warmup, cpu_threads=None)
    return {name: float(np.median(ts)) for name, ts in per_round.items()}


def op_counts(
    model: nn.Module, inputs: Tensor, targets: Tensor, factories: dict[str, Factory], *, warmup: int = 2
) -> dict[str, dict[str, int]]:
    """Operators dispatched by one step of each optimizer (after ``warmup`` steps), on its own copy of
    ``model`` with the benchmark's SGD base in its multi-tensor (foreach) form, the one torch uses on
    CUDA (on the CPU it would loop over the parameters, 3 ops each, and blur the engine's share);
    ``sam-scaler`` is SAM with an enabled ``GradScaler``.

    Returns:
        name -> ``{"kernels", "dispatched", "syncs"}`` (see :class:`sam_tutorial.engine.cost.OpCount`).
    """
    scaled: Factory = functools.partial(_sam_with_scaler, device=inputs.device)
    out: dict[str, dict[str, int]] = {}
    for name, factory in {**factories, "sam-scaler": scaled}.items():
        opt = _with_sgd_base(factory, foreach=True)(copy.deepcopy(model))
        for _ in range(warmup):
            opt.step(inputs, targets, CE)
        out[name] = cost.count_ops(functools.partial(opt.step, inputs, targets, CE))._asdict()
    return out


def _sam_with_scaler(model: nn.Module, base: torch.optim.Optimizer, *, device: torch.device) -> Any:
    from sam_tutorial.optim import SAM

    return SAM(model, base, rho=0.05, scaler=torch.amp.GradScaler(device.type))


def op_ratios(ops: dict[str, dict[str, int]]) -> dict[str, float]:
    """Every variant's kernels per step relative to SAM's (``m-sam-m16-vmap/sam``, ...)."""
    sam = ops["sam"]["kernels"]
    return {f"{name}/sam": c["kernels"] / sam for name, c in ops.items() if name != "sam"}


def ratios(times: dict[str, float]) -> dict[str, float]:
    """``sam/sgd``, ``usam/sgd``, and every other variant relative to SAM (``rw-sam/sam``, ...)."""
    out = {"sam/sgd": times["sam"] / times["sgd"]}
    if "usam" in times:
        out["usam/sgd"] = times["usam"] / times["sgd"]
    for name, t in times.items():
        if name not in ("sgd", "sam", "usam"):
            out[f"{name}/sam"] = t / times["sam"]
    return out


def trace_v_cost(model: nn.Module, inputs: Tensor, targets: Tensor, repeats: int = 5) -> dict[str, float]:
    """Seconds of ``noise.trace_V`` over the given N samples and of one forward+backward over them.

    Both in the same (eval) mode, medians of ``repeats``; the ratio is what the benchmark reports.
    """
    from sam_tutorial.sgn.variance import trace_V

    device = inputs.device
    model = copy.deepcopy(model).eval()

    def plain() -> None:
        model.zero_grad(set_to_none=True)
        CE(model(inputs), targets).mean().backward()

    def trace() -> None:
        trace_V(model, CE, inputs, targets)

    out = {}
    for name, fn in (("forward_backward", plain), ("trace_V", trace)):
        fn()
        ts = []
        for _ in range(repeats):
            cost.sync(device)
            start = time.perf_counter()
            fn()
            cost.sync(device)
            ts.append(time.perf_counter() - start)
        out[name] = statistics.median(ts)
    out["trace_V/forward_backward"] = out["trace_V"] / out["forward_backward"]
    return out


def run(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    model_name: str,
    ms: tuple[int, ...] = (64, 32, 16, 8),
    backends: tuple[str, ...] = ("loop", "vmap"),
    rounds: int = 10,
    warmup: int = 2,
    trace_samples: int | None = None,
) -> dict[str, Any]:
    """The whole benchmark on one batch: step-time ratios and the cost of ``trace_V``.

    Returns:
        A JSON-ready dict with keys ``device``, ``model``, ``batch``, ``ratios``, ``times`` (median
        seconds per step), ``ops`` (kernels, dispatches and host syncs of one step), ``op_ratios``
        (kernels relative to SAM), ``trace_V`` (seconds and ratio), ``torch``, ``platform``, ``rounds``.
    """
    batch = inputs.shape[0]
    g = torch.Generator(device="cpu").manual_seed(1)
    idx = torch.randint(0, batch, (4 * batch,), generator=g).to(inputs.device)
    nsam_data = (inputs[idx], targets[idx])  # n-SAM's data: 4 batches (its cost grows with |data|)
    factories = variants(batch, ms, backends, nsam_data)
    timed: dict[str, Any] = {**factories, "probe-forward": ProbeForward}
    times = time_steps(model, inputs, targets, timed, rounds=rounds, warmup=warmup)
    ops = op_counts(model, inputs, targets, factories, warmup=warmup)
    n = trace_samples or batch
    device = inputs.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": f"{device.type}: {name}",
        "model": model_name,
        "batch": batch,
        "ratios": ratios(times),
        "times": times,
        "ops": ops,
        "op_ratios": op_ratios(ops),
        "trace_V": {"samples": n, **trace_v_cost(model, inputs[:n], targets[:n])},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "rounds": rounds,
    }


def format_table(result: dict[str, Any]) -> str:
    """The result as a plain-text table (what ``python -m sam_tutorial bench`` prints)."""
    ops = result.get("ops", {})
    lines = [f"device: {result['device']}   model: {result['model']}   batch: {result['batch']}",
             f"{'variant':<22}{'ms/step':>10}{'kernels':>10}{'syncs':>7}"]
    for k in dict.fromkeys([*result["times"], *ops]):
        t = f"{1000 * result['times'][k]:>10.2f}" if k in result["times"] else f"{'-':>10}"
        c = ops.get(k)
        lines.append(f"{k:<22}{t}" + (f"{c['kernels']:>10}{c['syncs']:>7}" if c else ""))
    lines += ["", f"{'ratio':<26}{'value':>8}"]
    lines += [f"{k:<26}{v:>8.3f}" for k, v in result["ratios"].items()]
    if "op_ratios" in result:
        lines += ["", f"{'kernels per step':<26}{'ratio':>8}"]
        lines += [f"{k:<26}{v:>8.3f}" for k, v in result["op_ratios"].items()]
    tv = result["trace_V"]
    lines += ["", f"trace_V over {tv['samples']} samples / one forward+backward: "
                  f"{tv['trace_V/forward_backward']:.2f}"]
    return "\n".join(lines)


PRESETS: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {
    "resnet18": ("resnet18", (3, 32, 32), {}),
    "resnet18-w16": ("resnet18", (3, 32, 32), {"width": 16}),
    "wrn16-4": ("wrn16-4", (3, 32, 32), {}),
    "cnn1d": ("cnn1d", (1, 40), {}),
    "mlp": ("mlp", (40,), {}),
}
"""The benchmark models by name, each a triple of the ``models.build_model`` name, the input shape and
the options; CIFAR-sized inputs for the ResNets, MNIST-1D-sized ones for the small models."""


def default_model(device: torch.device) -> str:
    """A CIFAR ResNet-18 on CUDA; on the CPU a ResNet-18 of width 16 (0.7 M parameters)."""
    return "resnet18" if device.type == "cuda" else "resnet18-w16"


def main(
    device: str | None = None,
    model: str | None = None,
    batch: int = 128,
    json_path: str | None = None,
    rounds: int = 10,
    warmup: int = 2,
) -> dict[str, Any]:
    """Build the model and a random batch, run :func:`run`, print the table, write the JSON.

    Raises:
        ValueError: on an unknown model or device, or a batch size < 1.
    """
    from sam_tutorial.config import check_int
    from sam_tutorial.engine.models import build_model
    from sam_tutorial.engine.record import write_result_file
    from sam_tutorial.engine.result_formats import BENCH_FORMAT

    started = time.perf_counter()

    dev = torch.device(device) if device else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    name = model or default_model(dev)
    if name not in PRESETS:
        raise ValueError(f"model must be one of {', '.join(PRESETS)}; got {name!r}")
    check_int("batch", batch)
    arch, shape, options = PRESETS[name]
    torch.manual_seed(0)
    net = build_model(arch, num_classes=10, input_shape=shape, **options).to(dev)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, *shape, generator=g).to(dev)
    targets = torch.randint(0, 10, (batch,), generator=g).to(dev)
    ms = tuple(m for m in (64, 32, 16, 8) if m < batch)
    result = run(net, inputs, targets, model_name=name, ms=ms, rounds=rounds, warmup=warmup)
    print(format_table(result))
    if json_path:  # atomic, with its format tag and provenance: a killed run never leaves half a file
        command = (f"sam-tutorial bench --device {dev} --model {name} --batch {batch} --rounds {rounds} "
                   f"--json {json_path}")
        write_result_file(json_path, BENCH_FORMAT, result, command=command, device=result["device"],
                          wall_seconds=time.perf_counter() - started)
        print(f"wrote {json_path}")
    return result


GOALS: dict[str, float] = {
    "m-sam-m16-vmap/sam kernels": 2.0,
    "sam/sgd": 2.05,
    "rw-sam/sam": 1.15,  # below its floor 1 + probe-forward/sam where a forward is > 0.15 of a SAM step
    "m-sam-m16-best/sam (cpu)": 1.3,
    "m-sam-m16-best/sam (cuda)": 1.5,
}
"""Upper bounds on the measured ratios, the project's speed goals."""


def find_results(folder: str | None = None) -> list[dict[str, Any]]:
    """Recorded benchmark results ``bench-*.json``, sorted by file name.

    Looks in ``folder`` if given, else in :func:`sam_tutorial.engine.recorded.results_folder`; each file
    is read (and checked) by :func:`sam_tutorial.engine.recorded.read_result`.
    """
    from pathlib import Path

    from sam_tutorial.engine.recorded import read_result, results_folder

    try:
        path = Path(folder) if folder is not None else results_folder()
    except FileNotFoundError:
        return []
    return [read_result(f) for f in sorted(path.glob("bench-*.json"))]


def best_msam(result: dict[str, Any], m: int = 16) -> tuple[str, float] | None:
    """The faster m-SAM backend for micro-batch size ``m`` and its ratio to SAM (what ``"auto"``
    should choose on that device)."""
    rows = [(k.split("/")[0].rsplit("-", 1)[1], v) for k, v in result["ratios"].items()
            if k.startswith(f"m-sam-m{m}-")]
    return min(rows, key=lambda r: r[1]) if rows else None


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per ratio, one column per recorded device, as a Markdown table."""
    keys: list[str] = []
    for r in results:
        keys += [k for k in r["ratios"] if k not in keys]
    head = "| ratio | " + " | ".join(f"{r['device']} ({r['model']}, B={r['batch']})" for r in results) + " |"
    lines = [head, "|---|" + "---:|" * len(results)]
    for k in keys:
        cells = [f"{r['ratios'][k]:.2f}" if k in r["ratios"] else "" for r in results]
        lines.append(f"| `{k}` | " + " | ".join(cells) + " |")
    tv = [f"{r['trace_V']['trace_V/forward_backward']:.2f}" for r in results]
    lines.append("| `trace_V / forward+backward` | " + " | ".join(tv) + " |")
    return "\n".join(lines)
