"""What a catalogue run will cost, in device-hours, from measured step times (book chapter 6, "what the
deciding experiments cost"; ``sam-tutorial plan``).

Step times come from files in ``results/``, in two formats, each read into one :class:`StepTimes`
(seconds per optimizer step at a batch of 128, per model and per *timing key*, :func:`timing_key`):

* ``sam_tutorial.timing/1``: ``tools/paper_smoke.py`` (every catalogue step cost of every paper model,
  timed inside the training loop at the batch of 128 on the device: the measured GPU times the
  estimates should rest on) and ``tools/time_paper_models.py`` (ResNet-18/50, WRN-28-10 at two small
  batches on a CPU; a line ``t = a + b * batch`` through them is read at 128); both with FLOPs per image;
* the benchmark's JSON (``sam-tutorial bench --json``, e.g. ``results/bench-cuda.json``): one model at
  its batch.

A key a file does not hold is derived, and the estimate says how (its *basis*):

* m-SAM with the per-micro-batch loop costs SAM plus a fixed amount per extra micro-batch, fitted to
  the measured loop times (``t = t_sam + (k - 1) c`` for ``k = B / m`` micro-batches); with ``vmap`` the
  nearest measured m is taken (the vectorised passes cost nearly the same for every k);
* n-SAM over ``n`` samples costs the measured n-SAM plus ``(n - n0) / B`` forward+backward passes;
* a model without a measurement on the device is a measured model scaled by the ratio of FLOPs per image
  (the same utilisation assumed: an extrapolation, labelled so).

A run's hours are its epochs times (steps per epoch x step time + evaluation), plus its metrics:
evaluation is a forward pass over the test set (and the training set with ``eval_train``), a third of a
forward+backward per image; ``trace_V`` costs :data:`TRACE_V_FACTOR` forward+backward passes per sample
(the benchmark's measured ratio, rounded up). Data loading is on the device and not counted.

>>> t = StepTimes("cuda: example", {"resnet18": {"sgd": 0.015, "sam": 0.027}}, {}, ("example",))
>>> timing_key(TrainConfig(optimizer="m-sam", rho=0.05, m=32))
'm-sam-m32-vmap'
>>> step_seconds(t, "resnet18", TrainConfig(optimizer="sam", rho=0.05))
(0.027, 'measured')
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam_tutorial.engine.train_config import TrainConfig

__all__ = [
    "BATCH",
    "CIFAR_TEST",
    "CIFAR_TRAIN",
    "TIMING_FORMAT",
    "TRACE_V_FACTOR",
    "StepTimes",
    "device_step_times",
    "experiment_hours",
    "read_step_times",
    "run_seconds",
    "step_line",
    "step_seconds",
    "timing_key",
]

TIMING_FORMAT = "sam_tutorial.timing/1"
BATCH = 128
"""The batch size at which step times are compared (the paper's)."""

CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
TRACE_V_FACTOR = 5.0
"""Forward+backward passes per sample that ``trace_V`` costs (measured 4.6 on an H200, ResNet-18)."""

_SIZES = {"cifar10": (CIFAR_TRAIN, CIFAR_TEST), "cifar100": (CIFAR_TRAIN, CIFAR_TEST),
          "mnist1d": (4000, 1000)}


@dataclass(frozen=True)
class StepTimes:
    """Seconds per optimizer step at a batch of :data:`BATCH`, per model and timing key.

    Attributes:
        device: where they were measured (e.g. ``"cuda: NVIDIA H200"``).
        seconds: model -> timing key -> seconds per step.
        flops: model -> FLOPs of one forward+backward per image (for scaling between models).
        sources: the files they come from.
    """

    device: str
    seconds: Mapping[str, Mapping[str, float]]
    flops: Mapping[str, float] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0].strip()

    def merged(self, other: StepTimes) -> StepTimes:
        """These times, completed by ``other``'s where these lack a model or key (same device type)."""
        seconds = {m: dict(other.seconds.get(m, {})) | dict(self.seconds.get(m, {}))
                   for m in {*self.seconds, *other.seconds}}
        return StepTimes(self.device, seconds, dict(other.flops) | dict(self.flops),
                         self.sources + other.sources)


def timing_key(train: TrainConfig, device_type: str = "cuda") -> str:
    """The name of a step's cost: ``sgd``, ``sam``, ``m-sam-m<m>-<loop|vmap>``, ``n-sam-n<n>``,
    ``rw-sam``, ``rw-sam-exact`` (the descent reading does not change the cost)."""
    kind = train.optimizer
    if kind in ("sam", "usam"):
        return "sam"
    if kind == "m-sam":
        backend = train.options.get("backend", "auto")
        if backend == "auto":
            backend = "vmap" if device_type == "cuda" else "loop"
        return f"m-sam-m{train.m}-{backend}"
    if kind == "n-sam":
        return f"n-sam-n{train.nsam_samples if train.nsam_samples is not None else CIFAR_TRAIN}"
    if kind == "rw-sam":
        return "rw-sam-exact" if train.options.get("score") == "exact" else "rw-sam"
    return "sgd"


def _derive(times: Mapping[str, float], key: str) -> tuple[float, str] | None:
    """``key``'s time from the other keys of one model (module docstring), with its basis."""
    if key in times:
        return times[key], "measured"
    if key.startswith("m-sam-m") and "sam" in times:
        m_text, backend = key.removeprefix("m-sam-m").split("-")
        k = BATCH // int(m_text)
        known = {BATCH // int(name.removeprefix("m-sam-m").split("-")[0]): t for name, t in times.items()
                 if name.startswith("m-sam-m") and name.endswith(f"-{backend}")}
        if not known:
            return None
        if backend == "vmap":
            nearest = min(known, key=lambda k0: abs(k0 - k))
            return known[nearest], f"m-SAM vmap at m={BATCH // nearest} (measured)"
        per = [(t - times["sam"]) / (k0 - 1) for k0, t in known.items() if k0 > 1]
        if not per:
            return None
        return times["sam"] + (k - 1) * sum(per) / len(per), "m-SAM loop: SAM + a fitted cost per micro-batch"
    if key.startswith("n-sam-n") and "sgd" in times:
        n = int(key.removeprefix("n-sam-n"))
        known = {int(name.removeprefix("n-sam-n")): t for name, t in times.items()
                 if name.startswith("n-sam-n")}
        if known:
            n0 = min(known, key=lambda v: abs(v - n))
            basis = f"n-SAM at n={n0} + {n - n0} samples of SGD passes"
            return known[n0] + (n - n0) / BATCH * times["sgd"], basis
        if "sam" in times:
            return times["sam"] + n / BATCH * times["sgd"], "SAM + n/B SGD passes"
    return None


def step_seconds(times: StepTimes, model: str, train: TrainConfig) -> tuple[float, str] | None:
    """Seconds per step of ``model`` under ``train`` on ``times``'s device, and the basis of the number
    (``"measured"``, a derivation, or a FLOP scaling); ``None`` when nothing measured applies."""
    key = timing_key(train, times.device_type)
    if model in times.seconds:
        found = _derive(times.seconds[model], key)
        if found is not None:
            return found
    if model not in times.flops:
        return None
    for ref in sorted(times.seconds, key=lambda r: (r != "resnet18", r)):
        if ref == model or ref not in times.flops:
            continue
        found = _derive(times.seconds[ref], key)
        if found is not None:
            scale = times.flops[model] / times.flops[ref]
            basis = "" if found[1] == "measured" else f"; {found[1]}"
            return found[0] * scale, f"{ref} x {scale:.2f} (FLOPs per image; not measured){basis}"
    return None


def run_seconds(times: StepTimes, model: str, train: TrainConfig, data: Any) -> tuple[float, str] | None:
    """Seconds for one whole run (module docstring): ``data`` is its ``DataSpec`` (name, sizes)."""
    step = step_seconds(times, model, train)
    sgd = step_seconds(times, model, TrainConfig(optimizer="sgd"))
    if step is None or sgd is None:
        return None
    n_train, n_test = _SIZES.get(data.name, (CIFAR_TRAIN, CIFAR_TEST))
    n_train = min(n_train, data.n_train or n_train)
    n_test = min(n_test, data.n_test or n_test)
    per_image = sgd[0] / train.batch_size
    evaluation = (n_test + (n_train if train.eval_train else 0)) * per_image / 3
    epoch = (n_train // train.batch_size) * step[0] + evaluation
    evaluations = len(train.metric_epochs) or (1 if train.metrics else 0)
    metrics = evaluations * len(train.metrics) * train.metric_samples * per_image * TRACE_V_FACTOR
    return train.epochs * epoch + metrics, step[1]


def experiment_hours(
    name: str, mode: str, times: StepTimes, seeds: Iterable[int] | None = None
) -> tuple[float, set[str]] | None:
    """Device-hours of every run and seed of an experiment, and the bases of the step times used;
    ``None`` if some run has no estimate."""
    from sam_tutorial.engine.experiments import get_experiment

    exp = get_experiment(name)
    n_seeds = len(list(seeds if seeds is not None else exp.seeds[mode]))
    total, bases = 0.0, set()
    for spec in exp.runs(mode):
        found = run_seconds(times, str(spec.tags.get("model", spec.model)), spec.train, spec.data)
        if found is None:
            return None
        total += found[0] * n_seeds
        bases.add(found[1])
    return total / 3600, bases


def read_step_times(path: str | os.PathLike[str]) -> StepTimes:
    """Step times from a file in one of the two formats (module docstring).

    Raises:
        ValueError: for a file in none of them (naming the file).
    """
    from sam_tutorial.engine.recorded import read_result

    data = read_result(path)  # the one reader of result files: format, provenance, values checked
    fmt = data.get("format")
    if fmt == TIMING_FORMAT:
        seconds = {m: {_timing_name(k): _at_batch(v["seconds_per_step"], k) for k in _keys(v)}
                   for m, v in data["models"].items()}
        flops = {m: float(v["flops_per_image"]) for m, v in data["models"].items()}
        return StepTimes(str(data["provenance"]["device"]), seconds, flops, (str(path),))
    if "times" in data and "model" in data and int(data.get("batch", 0)) == BATCH:
        times = {("n-sam-n512" if k == "n-sam" else k): float(v) for k, v in data["times"].items()}
        return StepTimes(str(data["device"]), {str(data["model"]): times}, {}, (str(path),))
    raise ValueError(f"{path} holds no step times this package reads (format {fmt!r}); write one with "
                     "tools/paper_smoke.py or tools/time_paper_models.py")


def _keys(model: Mapping[str, Any]) -> list[str]:
    return list(next(iter(model["seconds_per_step"].values())))


def _timing_name(key: str) -> str:
    names = {"m-sam-half-loop": f"m-sam-m{BATCH // 2}-loop", "m-sam-half-vmap": f"m-sam-m{BATCH // 2}-vmap"}
    return names.get(key, key)


def step_line(per_batch: Mapping[str, Mapping[str, float]], key: str) -> tuple[float, float]:
    """``(a, b)`` of the step time ``t = a + b * batch`` of ``key``, through the times measured at the
    smallest and largest batch of ``per_batch`` (``{batch: {key: seconds}}``): ``a`` the per-step costs
    (probe, parameter update), kept >= 0, ``b`` the cost per image; where noise makes the line absurd (or
    one batch was measured), ``a = 0`` and ``b`` is the larger batch's time per image.

    >>> step_line({"32": {"sgd": 0.625}, "8": {"sgd": 0.25}}, "sgd")
    (0.125, 0.015625)
    """
    sizes = sorted(per_batch, key=int)
    b0, b1 = int(sizes[0]), int(sizes[-1])
    t0, t1 = float(per_batch[sizes[0]][key]), float(per_batch[sizes[-1]][key])
    if b1 == b0:
        return 0.0, t0 / b0
    slope = (t1 - t0) / (b1 - b0)
    intercept = t0 - slope * b0
    if intercept < 0 or slope <= 0:
        return 0.0, t1 / b1
    return intercept, slope


def _at_batch(per_batch: Mapping[str, Mapping[str, float]], key: str) -> float:
    """``key``'s time at :data:`BATCH` on :func:`step_line`."""
    a, b = step_line(per_batch, key)
    return a + b * BATCH


def device_step_times(
    folders: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], device_type: str = "cuda"
) -> StepTimes | None:
    """The best step times for ``device_type`` in ``folders`` (the first folder first): the paper smoke's
    and paper-model timings (``paper-smoke-*.json``, ``paper-timing-*.json``) first, then benchmarks
    (``bench-*.json``) of that device; FLOPs per image from any of them. ``None`` if none was measured
    on that device."""
    found: list[StepTimes] = []
    flops: dict[str, float] = {}
    flop_sources: list[str] = []
    roots = [Path(folders)] if isinstance(folders, str | os.PathLike) else [Path(f) for f in folders]
    for pattern in ("paper-smoke-*.json", "paper-timing-*.json", "bench-*.json"):
        for path in [p for root in dict.fromkeys(roots) for p in sorted(root.glob(pattern))]:
            try:
                times = read_step_times(path)
            except (ValueError, KeyError, TypeError, OSError):
                continue
            if set(times.flops) - set(flops):
                flops = dict(times.flops) | flops
                flop_sources += [f"FLOPs: {src}" for src in times.sources]
            if times.device_type == device_type:
                found.append(times)
    if not found:
        return None
    best = found[0]
    for other in found[1:]:
        best = best.merged(other)
    extra = tuple(src for src in flop_sources if src.removeprefix("FLOPs: ") not in best.sources)
    return StepTimes(best.device, best.seconds, flops | dict(best.flops), best.sources + extra)
