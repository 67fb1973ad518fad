"""The controls chapters 4-5 lacked, in chapter 4's memorising setting (book chapters 4, 5 and 6).

Chapter 4 found the regime where a regulariser has work to do: a 1-D CNN on MNIST-1D that fits every
noisy label under SGD. Two experiments rerun there what had no positive control, at a scale a shared
two-core CPU affords (smaller than ``m-sharpness-cnn``: :data:`N_TRAIN` samples instead of 2000; the same
64-channel CNN, batch and 100 epochs), with the radii chosen on a validation split carved from the training
set (``TrainConfig.val_fraction``: its last ``VAL_FRACTION``, with the labels it carries, noisy ones
included), never on the test set:

``controls-noise`` (the paper's Table 4 protocol, reduced): symmetric label noise
``NOISE`` = 20/40/60/80 %; SGD (the positive control: its training accuracy on the noisy labels says
whether it memorises), SAM, normalised m-SAM at m = 32 and m = 8, RW-SAM with uniform and with weighted
descent. Every arm runs on its small grid (:data:`GRID`: two radii for SAM and m-SAM, scaled across m;
RW-SAM at one radius over two λ, :data:`RW_LAMS`); the chapters pick each
arm's setting by mean validation accuracy and report the test accuracy of that setting, paired by seed.

``controls-escape`` (the paper's Figs. 1-2 protocol): SGD fits the noisy labels (``ESCAPE_NOISE``)
from scratch; every variant then continues from those weights at a constant learning rate with one
radius ``ESCAPE_RHO`` (as in the paper's figures, where only m changes), and test accuracy and tr V
(on the first ``METRIC_SAMPLES`` training samples) are recorded after every epoch. n-SAM's
perturbation is the gradient of the whole training set (``nsam_samples=None``), not a stand-in subset.

``paper`` mode is the recorded configuration (``results/controls-noise-paper.json``,
``results/controls-escape-paper.json``); ``standard`` mode is SGD and SAM at 80 % noise, seed 0 (a live
check of the recorded SGD control); ``quick`` mode is a pipeline check on 256 samples.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sam_tutorial.engine.catalog.registry import register
from sam_tutorial.engine.runs import DataSpec, Experiment, RunSpec
from sam_tutorial.engine.train_config import TrainConfig
from sam_tutorial.stats import Decision, decide, mean_se, paired_differences

__all__ = [
    "ARMS", "CHANNELS", "Choice", "EPOCHS", "ESCAPE_EPOCHS", "ESCAPE_NOISE", "ESCAPE_RHO", "GRID",
    "METRIC_SAMPLES", "MIN_EFFECT", "choose", "compare", "diverged", "escape_band", "escape_decision",
    "record",
    "NOISE", "N_TRAIN", "RW_DELTA", "RW_LAMS", "VAL_FRACTION", "arm_of", "curves_of", "noise_label",
]

MIN_EFFECT = 0.02
"""The smallest test-accuracy difference the controls treat as mattering, 2 points (the paper's SAM - SGD
gap in its label-noise table is 2-3 points), the ``min_effect`` of :func:`sam_tutorial.stats.decide`."""

N_TRAIN = 800
"""The first 800 MNIST-1D training samples (640 trained on, the last 160 the validation split)."""

VAL_FRACTION = 0.2
CHANNELS = 64
EPOCHS = 100
BATCH = 128
"""640 / 128 = 5 full batches per epoch, so no sample is dropped (chapter 4's batch)."""

NOISE: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)

ARMS: tuple[str, ...] = ("sgd", "sam", "m-sam-m32", "m-sam-m8", "rw-sam-uniform", "rw-sam-weighted")
"""The arms of ``controls-noise``; m-SAM at m = 32 and m = 8, as in chapter 4."""

_SAM_RHOS = (0.1, 0.3)
GRID: dict[str, tuple[float, ...]] = {
    "sgd": (0.0,),
    "sam": _SAM_RHOS,
    "m-sam-m32": tuple(round(r * (32 / BATCH) ** 0.25, 4) for r in _SAM_RHOS),
    "m-sam-m8": tuple(round(r * (8 / BATCH) ** 0.25, 4) for r in _SAM_RHOS),
    "rw-sam-uniform": (0.2,),
    "rw-sam-weighted": (0.2,),
}
"""Radii per arm, two of them a factor 3 apart (what the CPU budget allowed; a two-point grid cannot show an
interior optimum). m-SAM's are SAM's times (m/B)^(1/4), half-way (in logarithm) between no scaling and
the √m penalty law ρ√(c_m tr V): chapter 4's recorded optima at 30 % noise (SAM 0.2, m = 32 0.15,
m = 8 0.1) lie between each pair. RW-SAM runs at SAM's geometric middle, 0.2, with λ from
:data:`RW_LAMS` chosen on the validation split."""

RW_LAMS: tuple[float, ...] = (0.1, 1.0)
"""RW-SAM's inverse temperatures, a decade apart (in chapter 5, on the MLP, the weighted reading broke
down from λ ≈ 0.3 to 1)."""
RW_DELTA = 0.01

ESCAPE_NOISE = 0.4
ESCAPE_INIT_EPOCHS = 100
ESCAPE_EPOCHS = 20
ESCAPE_RHO = 0.1
ESCAPE_LR = 0.02
METRIC_SAMPLES = 500

_ESCAPE_ARMS: dict[str, dict[str, Any]] = {
    "sgd": dict(optimizer="sgd"),
    "n-sam": dict(optimizer="n-sam", rho=ESCAPE_RHO),
    "sam": dict(optimizer="sam", rho=ESCAPE_RHO),
    "m-sam-m32": dict(optimizer="m-sam", rho=ESCAPE_RHO, m=32, options={"backend": "vmap"}),
    "m-sam-m8": dict(optimizer="m-sam", rho=ESCAPE_RHO, m=8, options={"backend": "vmap"}),
    "rw-sam-uniform": dict(optimizer="rw-sam", rho=ESCAPE_RHO, lam=1.0, delta=RW_DELTA,
                           options={"weighted_descent": False}),
    "rw-sam-weighted": dict(optimizer="rw-sam", rho=ESCAPE_RHO, lam=1.0, delta=RW_DELTA,
                            options={"weighted_descent": True}),
}


def noise_label(arm: str, noise: float, rho: float = 0.0, lam: float | None = None) -> str:
    """Run label of ``controls-noise``: ``sgd-noise0.8``, ``sam-noise0.2-rho0.1``,
    ``rw-sam-weighted-noise0.4-rho0.05-lam1``."""
    out = f"{arm}-noise{noise:g}"
    if arm != "sgd":
        out += f"-rho{rho:g}"
    if lam is not None:
        out += f"-lam{lam:g}"
    return out


def _kind(arm: str, rho: float, lam: float | None) -> dict[str, Any]:
    if arm == "sgd":
        return dict(optimizer="sgd")
    if arm == "sam":
        return dict(optimizer="sam", rho=rho)
    if arm.startswith("m-sam-m"):
        m = int(arm.removeprefix("m-sam-m"))
        return dict(optimizer="m-sam", rho=rho, m=m, options={"backend": "vmap"})
    weighted = arm == "rw-sam-weighted"
    return dict(optimizer="rw-sam", rho=rho, lam=lam, delta=RW_DELTA, options={"weighted_descent": weighted})


def _data(mode: str, noise: float) -> DataSpec:
    return DataSpec("mnist1d", 256 if mode == "quick" else N_TRAIN, 256 if mode == "quick" else None,
                    label_noise=noise)


def _model(mode: str) -> dict[str, Any]:
    return {"channels": 8 if mode == "quick" else CHANNELS}


def _noise_run(mode: str, arm: str, noise: float, rho: float, lam: float | None) -> RunSpec:
    quick = mode == "quick"
    train = TrainConfig(epochs=2 if quick else EPOCHS, batch_size=BATCH, lr=0.05, val_fraction=VAL_FRACTION,
                        **_kind(arm, rho, lam))
    tags = {"arm": arm, "noise": noise, "rho": rho, "lam": lam}
    return RunSpec(noise_label(arm, noise, rho, lam), _data(mode, noise), "cnn1d", train, _model(mode),
                   tags=tags)


def _settings(arm: str) -> list[tuple[float, float | None]]:
    lams: Iterable[float | None] = RW_LAMS if arm.startswith("rw-sam") else (None,)
    return [(rho, lam) for rho in GRID[arm] for lam in lams]


def _controls_noise(mode: str) -> list[RunSpec]:
    if mode == "paper":
        return [_noise_run(mode, arm, p, rho, lam)
                for p in NOISE for arm in ARMS for rho, lam in _settings(arm)]
    if mode == "standard":
        return [_noise_run(mode, "sgd", 0.8, 0.0, None), _noise_run(mode, "sam", 0.8, 0.1, None)]
    return [_noise_run(mode, arm, 0.4, GRID[arm][0], RW_LAMS[0] if arm.startswith("rw") else None)
            for arm in ("sgd", "sam", "m-sam-m8", "rw-sam-weighted")]


def _controls_escape(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    data = _data(mode, ESCAPE_NOISE)
    init = TrainConfig(optimizer="sgd", epochs=2 if quick else ESCAPE_INIT_EPOCHS, batch_size=BATCH, lr=0.05,
                       val_fraction=VAL_FRACTION)
    epochs = 2 if quick else ESCAPE_EPOCHS
    metric: dict[str, Any] = dict(metrics=("trace_V",), metric_epochs=tuple(range(epochs + 1)),
                  metric_samples=64 if quick else METRIC_SAMPLES)
    runs = [RunSpec("sgd-fit", data, "cnn1d", init, _model(mode), tags={"phase": "fit"})]
    arms: tuple[str, ...] = ("sgd", "sam", "m-sam-m8")
    if not quick:
        arms = ("sgd", "n-sam", "sam", "m-sam-m32", "m-sam-m8")
    if mode == "paper":
        arms = tuple(_ESCAPE_ARMS)
    for arm in arms:
        train = TrainConfig(epochs=epochs, batch_size=BATCH, lr=ESCAPE_LR, schedule="constant",
                            val_fraction=VAL_FRACTION, **metric, **_ESCAPE_ARMS[arm])
        runs.append(RunSpec(arm, data, "cnn1d", train, _model(mode), init_from="sgd-fit",
                            tags={"arm": arm, "rho": _ESCAPE_ARMS[arm].get("rho", 0.0)}))
    return runs


def arm_of(record: Mapping[str, Any]) -> str:
    """The arm of a recorded or cached ``controls-*`` record (from its tags)."""
    return str(record["tags"].get("arm", record["label"]))


def curves_of(record: Mapping[str, Any]) -> dict[str, list[float]]:
    """The per-epoch curves an escape record carries: ``epoch``, ``test_acc``, ``train_acc``,
    ``train_acc_clean`` (epochs 1..E) and ``trace_V`` (epochs 0..E), from a cached result's history."""
    h = record["history"]
    out = {k: list(h[k]) for k in ("epoch", "test_acc", "train_acc", "train_acc_clean") if k in h}
    if "trace_V" in h["metrics"]:  # the continuation runs (the SGD fit measures none)
        out["metric_epoch"] = list(h["metrics"]["epoch"])
        out["trace_V"] = list(h["metrics"]["trace_V"])
    return out


_NOTES = ("MNIST-1D, first {n} training samples (the last {v:.0%} held out as the validation split, labels "
          "as given), {p} symmetric label noise ('other'), clean test set; cnn1d with {c} channels; "
          "batch {b}, SGD momentum 0.9, wd 5e-4. ")

register(Experiment(
    "controls-noise",
    "label noise 20-80 % where SGD memorises: SGD, SAM, m-SAM (m=32, 8), RW-SAM (both descents), radii "
    "chosen on a validation split",
    _controls_noise,
    {"quick": (0,), "standard": (0,), "paper": (0, 1, 2)},
    chapter="05_reweighted_sam",
    notes=_NOTES.format(n=N_TRAIN, v=VAL_FRACTION, p="20/40/60/80 %", c=CHANNELS, b=BATCH)
    + f"{EPOCHS} epochs, cosine lr 0.05. Radii GRID per arm (m-SAM's scaled by (m/B)^(1/4)); RW-SAM lambda "
      f"{RW_LAMS}, delta {RW_DELTA} (the paper's lambda, delta and descent pass are UNCONFIRMED). A "
      "reduced version of the paper's Table 4 protocol (CIFAR, ResNet): 3 seeds.",
))

register(Experiment(
    "controls-escape",
    "escape from an SGD fit of noisy labels: SGD, n-SAM (full gradient), SAM, m-SAM (m=32, 8), RW-SAM; "
    "test accuracy and tr V per epoch",
    _controls_escape,
    {"quick": (0,), "standard": (0,), "paper": (0, 1, 2)},
    chapter="04_m_sharpness",
    notes=_NOTES.format(n=N_TRAIN, v=VAL_FRACTION, p=f"{ESCAPE_NOISE:.0%}", c=CHANNELS, b=BATCH)
    + f"Phase 1: SGD, {ESCAPE_INIT_EPOCHS} epochs, cosine lr 0.05 (fits the noisy labels). Phase 2 from its "
      f"weights: constant lr {ESCAPE_LR}, rho {ESCAPE_RHO} for every variant, {ESCAPE_EPOCHS} epochs; tr V "
      f"on the first {METRIC_SAMPLES} training samples before phase 2 and after every epoch; n-SAM's "
      "perturbation from the full training gradient; RW-SAM lambda 1. The paper's Figs. 1-2 setup is "
      "UNCONFIRMED.",
))


# ----------------------------------------------------------------------------- reading the records
def record(name: str, out: str | os.PathLike[str], to: str | os.PathLike[str], *, device: str,
           command: str) -> dict[str, Any]:
    """Write the finished ``paper``-mode runs of ``controls-noise`` or ``controls-escape`` as a recorded
    file (:func:`sam_tutorial.engine.record.write_recorded`), the escape runs with their per-epoch
    curves (:func:`curves_of`); runs not finished are named in the provenance's notes.

    Raises:
        ValueError: for another experiment, or if no run is finished.
    """
    from sam_tutorial.engine.experiments import load_results
    from sam_tutorial.engine.record import records_from_results, write_recorded

    if name not in ("controls-noise", "controls-escape"):
        raise ValueError(f"name must be controls-noise or controls-escape, got {name!r}")
    res = load_results(name, mode="paper", out=out)
    if not res.records:
        raise ValueError(f"no finished run of {name} under {out}: run it first")
    recs = records_from_results(res.records)
    if name == "controls-escape":
        for rec, full in zip(recs, res.records):
            rec["curves"] = curves_of(full)
    wall = sum(float(r["timing"].get("seconds_this_call") or 0.0) for r in res.records)
    missing = ", ".join(f"{label} (seed {seed})" for label, seed in res.missing)
    total = len(res.records) + len(res.missing)
    notes = (f"{len(res.records)} of the {total} (run, seed) pairs recorded; not run (CPU budget): {missing}"
             if missing else "every run finished")
    return write_recorded(to, name, "paper", recs, command=command, device=device, wall_seconds=wall,
                          notes=notes)


def _by_seed(records: Iterable[Mapping[str, Any]], metric: str) -> dict[Hashable, float]:
    return {int(r["seed"]): float(r["metrics"][metric]) for r in records
            if r["metrics"].get(metric) is not None}


@dataclass(frozen=True)
class Choice:
    """An arm's setting at one noise level, chosen by mean validation accuracy over the seeds.

    Attributes:
        arm: which arm.
        noise: which noise rate.
        rho: the chosen radius.
        lam: the chosen inverse temperature (RW-SAM; ``None`` otherwise).
        val_acc: its mean validation accuracy (on the split's own, noisy, labels) over the seeds every
            setting has.
        edge: True if the choice lies at the edge of a grid of more than one point (radius or λ).
        test_acc: per seed, at the chosen setting.
        train_acc: per seed, on the labels trained on, noisy ones included (SGD's is the positive control).
        train_acc_clean: per seed, on the clean training labels.
    """

    arm: str
    noise: float
    rho: float
    lam: float | None
    val_acc: float
    edge: bool
    test_acc: dict[Hashable, float]
    train_acc: dict[Hashable, float]
    train_acc_clean: dict[Hashable, float]


def choose(records: Sequence[Mapping[str, Any]], arm: str, noise: float) -> Choice:
    """The setting of ``arm`` at ``noise`` with the best mean validation accuracy over the seeds that every
    setting has (the book's protocol: radii chosen on a validation split carved from the training set,
    never on the test set; when only the chosen setting was rerun with more seeds, the choice rests on
    the seeds of the whole grid).

    Raises:
        ValueError: if the records hold no run of that arm at that noise rate.
    """
    rows = [r for r in records if arm_of(r) == arm and math.isclose(float(r["tags"]["noise"]), noise)]
    if not rows:
        raise ValueError(f"no record of arm {arm!r} at noise {noise}; arms are {', '.join(ARMS)}")
    settings: dict[tuple[float, float | None], list[Mapping[str, Any]]] = {}
    for r in rows:
        settings.setdefault((float(r["tags"]["rho"]), r["tags"].get("lam")), []).append(r)
    vals = {k: _by_seed(v, "val_acc") for k, v in settings.items()}
    shared = set.intersection(*(set(v) for v in vals.values()))  # compare settings on the same seeds
    if not shared:
        raise ValueError(f"the settings of {arm!r} at noise {noise} share no seed: {vals}")
    val = {k: mean_se([v[s] for s in shared])[0] for k, v in vals.items()}
    (rho, lam), best = max(val.items(), key=lambda kv: kv[1])
    rhos = sorted({k[0] for k in settings})
    lams = sorted({k[1] for k in settings if k[1] is not None})
    edge = (len(rhos) > 1 and rho in (rhos[0], rhos[-1])) or (len(lams) > 1 and lam in (lams[0], lams[-1]))
    chosen = settings[(rho, lam)]
    return Choice(arm, noise, rho, lam, best, edge, _by_seed(chosen, "test_acc"),
                  _by_seed(chosen, "train_acc"), _by_seed(chosen, "train_acc_clean"))


def compare(a: Choice, b: Choice, min_effect: float = MIN_EFFECT) -> Decision:
    """The book's rule (:func:`sam_tutorial.stats.decide`) on the test-accuracy differences ``a - b``,
    paired by seed."""
    return decide(paired_differences(a.test_acc, b.test_acc), min_effect)


def _escape_runs(records: Sequence[Mapping[str, Any]], arm: str) -> list[Mapping[str, Any]]:
    runs = [r for r in records if r["label"] == arm]
    if not runs:
        raise ValueError(f"no escape record of {arm!r}; arms are {', '.join(_ESCAPE_ARMS)}")
    return runs


def _series(records: Sequence[Mapping[str, Any]], rec: Mapping[str, Any], key: str) -> list[float]:
    """tr V at epochs 0..E, or test accuracy at 0..E (epoch 0: the SGD fit the run starts from)."""
    c = rec["curves"]
    if key == "trace_V":
        return [float(v) for v in c["trace_V"]]
    start = [r for r in records if r["label"] == "sgd-fit" and r["seed"] == rec["seed"]]
    return [float(start[0]["metrics"][key]) if start else math.nan, *map(float, c[key])]


def diverged(records: Sequence[Mapping[str, Any]], arm: str) -> list[int]:
    """The seeds whose escape run of ``arm`` left the finite numbers (a non-finite tr V or accuracy)."""
    def finite(rec: Mapping[str, Any]) -> bool:
        return all(math.isfinite(v) for k in ("trace_V", "test_acc") for v in _series(records, rec, k))

    return sorted(int(r["seed"]) for r in _escape_runs(records, arm) if not finite(r))


def escape_band(records: Sequence[Mapping[str, Any]], arm: str,
                key: str) -> tuple[list[float], list[float]]:
    """Mean and standard error over the seeds that stayed finite (:func:`diverged`), per epoch 0..E, of
    ``key`` (``trace_V`` or ``test_acc``) for one escape arm (figures 1-2 protocol); nan where no seed
    did."""
    bad = set(diverged(records, arm))
    rows = [_series(records, r, key) for r in _escape_runs(records, arm) if int(r["seed"]) not in bad]
    if not rows:
        n = len(_series(records, _escape_runs(records, arm)[0], key))
        return [math.nan] * n, [math.nan] * n
    out = [mean_se(c) if len(c) > 1 else (float(c[0]), math.nan) for c in zip(*rows)]
    return [m for m, _ in out], [s for _, s in out]


def escape_decision(records: Sequence[Mapping[str, Any]], arm: str, key: str, min_effect: float,
                    ref: str = "sgd", last: int = 3) -> Decision:
    """The rule on ``arm - ref`` for ``key`` averaged over the last ``last`` epochs, paired by the seeds
    where both runs stayed finite."""
    def tails(name: str) -> dict[Hashable, float]:
        bad = set(diverged(records, name))
        return {int(r["seed"]): sum(_series(records, r, key)[-last:]) / last
                for r in _escape_runs(records, name) if int(r["seed"]) not in bad}

    return decide(paired_differences(tails(arm), tails(ref)), min_effect)
