"""Chapter 6's view of the paper's configurations: the paper's tables as rows (numbers from
:mod:`sam_tutorial.published`), the settings the catalogue had to choose (read from the catalogue's run
specifications, not retyped), and the cost of the full tables, extrapolated from measured step times.

>>> table = paper_tables()
>>> table["Table 1"][0]["SAM"], table["Table 4"][-1]["noise"]
(95.99, '80 %')
>>> sorted(assumed_settings()["epochs"])
['200']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sam_tutorial.published import CIFAR_TRAIN, TABLE1, TABLE2, TABLE4, TABLE6

__all__ = [
    "assumed_settings",
    "bench_epoch_seconds",
    "default_of",
    "epoch_seconds",
    "step_fit",
    "load_timings",
    "paper_experiments",
    "paper_tables",
    "table_cost",
]


def paper_experiments() -> list[str]:
    """Names of the catalogue's paper experiments (``table1-*``, ``table4-*``, ``table6-*``)."""
    from sam_tutorial.engine.experiments import EXPERIMENTS

    return [name for name in EXPERIMENTS if name.startswith("table")]


def paper_tables() -> dict[str, list[dict[str, Any]]]:
    """The paper's Tables 1, 2, 4 and 6 as rows, with the catalogue experiment of each row of Tables 1, 4."""
    names = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "wrn28-10": "WRN-28-10"}
    t1 = [
        {
            "model": names[m],
            "data": d.upper().replace("CIFAR", "CIFAR-"),
            "SGD": v[0],
            "SAM": v[1],
            "RW-SAM": v[2],
            "experiment": f"table1-{m}-{d}",
        }
        for (m, d), v in TABLE1.items()
    ]
    t2 = [{"setting": k, "baseline": v[0], "SAM": v[1], "RW-SAM": v[2]} for k, v in TABLE2.items()]
    t4 = [
        {
            "noise": f"{round(q * 100)} %",
            "SGD": v[0],
            "SAM": v[1],
            "RW-SAM": v[2],
            "experiment": f"table4-noise{round(q * 100)}",
        }
        for q, v in TABLE4.items()
    ]
    t6 = [{"optimizer": k, "tr V": v[0], "std": v[1]} for k, v in TABLE6.items()]
    return {"Table 1": t1, "Table 2": t2, "Table 4": t4, "Table 6": t6}


def default_of(fn: Callable[..., Any], name: str) -> Any:
    """The default value of parameter ``name`` of ``fn`` (read from its signature, never retyped)."""
    return inspect.signature(fn).parameters[name].default


_SETTINGS = (
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "nesterov",
    "schedule",
    "warmup_epochs",
    "augment",
    "rho",
    "lam",
    "delta",
    "metric_samples",
)


def assumed_settings() -> dict[str, set[str]]:
    """Every value the catalogue's paper experiments (``paper`` mode) use for each training setting the
    paper does not state, with RW-SAM's option defaults, the seeds and the label-noise model."""
    from sam_tutorial.engine.experiments import get_experiment
    from sam_tutorial.optim import RWSAM

    out: dict[str, set[str]] = {}
    for name in paper_experiments():
        exp = get_experiment(name)
        for spec in exp.runs("paper"):
            cfg = spec.train.to_dict()
            for key in _SETTINGS:
                if key == "metric_samples" and not cfg["metrics"]:
                    continue
                if key in ("lam", "delta") and cfg["optimizer"] != "rw-sam":
                    continue
                if key == "rho" and cfg["optimizer"] == "sgd":
                    continue
                value = cfg[key] if key != "rho" else f"{cfg['rho']} ({spec.data.name})"
                out.setdefault(key, set()).add(str(value))
            if spec.data.label_noise:
                out.setdefault("label_noise_kind", set()).add(spec.data.label_noise_kind)
            out.setdefault("seeds", set()).add(", ".join(map(str, exp.seeds["paper"])))
            if cfg["optimizer"] == "rw-sam":
                for option in (
                    "weighted_descent",
                    "probe",
                    "normalize_probe",
                    "n_probes",
                    "transform",
                    "standardize",
                    "mix",
                ):
                    value = cfg["options"].get(option, default_of(RWSAM.__init__, option))
                    out.setdefault(f"RW-SAM {option}", set()).add(str(value))
    return out


def load_timings(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The step-time files of ``tools/time_paper_models.py`` in ``folder`` (``paper-timing-*.json``),
    by device type (``cpu``, ``cuda``)."""
    from sam_tutorial.engine.recorded import read_result

    out = {}
    for path in sorted(Path(folder).glob("paper-timing-*.json")):
        data = read_result(path)
        if data["format"] == "sam_tutorial.timing/1":
            out[str(data["provenance"]["device"]).split(":")[0]] = data | {"path": str(path)}
    return out


def step_fit(timing: Mapping[str, Any], model: str, optimizer: str) -> tuple[float, float]:
    """``(a, b)`` of ``t = a + b * batch`` through the step times measured at the smallest and largest batch
    (``a``: per-step costs such as the probe and the parameter update, kept >= 0; ``b``: per image):
    :func:`sam_tutorial.engine.estimate.step_line` on the model's ``seconds_per_step``."""
    from sam_tutorial.engine.estimate import step_line

    return step_line(timing["models"][model]["seconds_per_step"], optimizer)


def epoch_seconds(
    timing: Mapping[str, Any], model: str, optimizer: str, *, batch: int = 128, images: int = CIFAR_TRAIN
) -> float:
    """Seconds per epoch of ``images`` images at ``batch`` per step, from :func:`step_fit`.

    ``optimizer`` is ``sgd``, ``sam``, ``rw-sam`` or ``m-sam-m64-loop`` (m-SAM with two
    micro-batches, m = B/2: the paper's m = 64 at its batch of 128).
    """
    a, b = step_fit(timing, model, optimizer)
    return (a + b * batch) * (images // batch)


def bench_epoch_seconds(
    bench: Mapping[str, Any], optimizer: str, *, scale: float = 1.0, images: int = CIFAR_TRAIN
) -> float:
    """Seconds per epoch from a benchmark file (``results/bench-*.json``: step times at its batch size),
    times ``scale`` (e.g. the ratio of another model's FLOPs per image to the benchmarked model's)."""
    return float(bench["times"][optimizer]) * (images // int(bench["batch"])) * scale


def table_cost(
    per_epoch: Callable[[str, str], float], experiments: list[str] | None = None
) -> dict[str, float]:
    """Hours to train every run and seed of each paper experiment in ``paper`` mode (200 epochs, 3 seeds
    and the runs of the catalogue), given ``per_epoch(model, optimizer)`` in seconds."""
    from sam_tutorial.engine.experiments import get_experiment

    out = {}
    for name in experiments if experiments is not None else paper_experiments():
        exp = get_experiment(name)
        seconds = sum(
            per_epoch(str(spec.tags["model"]), spec.train.optimizer) * spec.train.epochs
            for spec in exp.runs("paper")
            for _ in exp.seeds["paper"]
        )
        out[name] = seconds / 3600
    return out
