"""The experiments that would decide the book's open questions at the paper's scale (CIFAR-10/100,
ResNet-18 and WRN-28-10, the settings of :mod:`sam_tutorial.engine.catalog.paper`).

============================== ===================================================================
experiment                     the question it decides
============================== ===================================================================
``msweep-<model>-<data>``      does test error fall as m falls, at scale (chapter 4's puzzle)?
                               SGD, SAM (m = B), m-SAM at m = 64, 32, 16, 8, n-SAM
``rwsam-<model>-<data>``       which descent pass is the paper's RW-SAM, and does it match
                               m-SAM(64) in accuracy at a fraction of its cost? SAM, m-SAM(64),
                               RW-SAM at the chapters' λ, RW-SAM uniform / weighted at a
                               scale-free λ
``lambda-resnet18-cifar10``    Table 5: λ sensitivity, on a scale-free footing, both readings
``noise-resnet18-cifar10``     Table 4 in a memorising regime (20-80 % noise) with m-SAM(64) and
                               both readings of RW-SAM
``escape-resnet18-cifar10``    Figs. 1-2: from a poorly generalising SGD minimum, test accuracy
                               and tr V under SGD, n-SAM, SAM and m-SAM(64 ... 8)
============================== ===================================================================

**λ on a scale-free footing.** RW-SAM's weights are ``softmax(λ s)`` over the batch's scores ``s``,
so λ means nothing until the scores' scale is known, and that scale differs by orders of magnitude
between an MNIST-1D MLP and a CIFAR ResNet (and by √P between the two probe scalings). The RW-SAM arms
here use ``standardize=True`` (:class:`~sam_tutorial.optim.rwsam.RWSAM`): the scores are standardised over the
batch before the softmax, and since the softmax ignores a shift, this is ``softmax((λ / std(s)) s)``:
λ is measured **in units of the batch's score spread**. λ is then set by the effective batch it aims at
(:func:`lam_for_effective_batch`): for standardised scores that are roughly Gaussian, the weights'
effective batch ``1 / Σ p²`` is about ``B exp(-λ²)``, so ``λ = sqrt(ln(B / m_eff))``; ``m_eff = 64`` of
``B = 128`` (λ ≈ 0.83) matches the paper's comparison with m-SAM(64). Scores are not Gaussian, so the
runs log the effective batch they actually get, and the weight on mislabelled samples, per epoch (the
per-step metrics of :func:`~sam_tutorial.engine.train.fit`).

Choices the paper does not state (m-SAM's radius for every m, n-SAM's sample count, the λ footing, the
escape protocol) are UNCONFIRMED and named in each experiment's notes (``sam-tutorial show NAME``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sam_tutorial.engine.catalog.paper import PAPER_MODELS, PAPER_NOTES, PAPER_SEEDS
from sam_tutorial.engine.catalog.registry import register
from sam_tutorial.engine.runs import DataSpec, Experiment, RunSpec
from sam_tutorial.engine.train_config import TrainConfig

__all__ = [
    "DECIDING",
    "ESCAPE",
    "LAMBDA_TARGETS",
    "M_VALUES",
    "NSAM_SAMPLES",
    "QUESTIONS",
    "RW_TARGET",
    "lam_for_effective_batch",
]

BATCH = 128
M_VALUES = (64, 32, 16, 8)
"""m-SAM's micro-batch sizes (m = 128 is SAM)."""

NSAM_SAMPLES = 1024
"""n-SAM's perturbation is the gradient of the first 1024 training samples (8 batches; UNCONFIRMED)."""

RW_TARGET = 64
"""The effective batch the scale-free λ of the RW-SAM arms aims at (the paper compares with m-SAM(64))."""

LAMBDA_TARGETS = (112, 96, 64, 32, 16, 8)
"""Effective batches of the λ sweep (Table 5), each turned into λ by :func:`lam_for_effective_batch`."""

RW_RAW_LAM = 0.1
"""The chapters' λ on the raw scores (the catalogue's Table 1 arm), kept to show what transfers."""


def lam_for_effective_batch(batch: int, m_eff: float) -> float:
    """λ in units of the scores' spread that gives standardised Gaussian scores an effective batch of
    about ``m_eff`` out of ``batch``: ``sqrt(ln(batch / m_eff))`` (module docstring).

    For ``z ~ N(0, 1)`` and ``p ∝ exp(λ z)``, ``1 / Σ p² ≈ B (E e^{λz})² / E e^{2λz} = B e^{-λ²}``.

    >>> round(lam_for_effective_batch(128, 64), 4), lam_for_effective_batch(128, 128)
    (0.8326, 0.0)

    Raises:
        ValueError: unless ``0 < m_eff <= batch``.
    """
    if not (isinstance(batch, int) and batch >= 1 and 0 < m_eff <= batch):
        raise ValueError(f"need an integer batch >= 1 and 0 < m_eff <= batch; got batch={batch!r}, "
                         f"m_eff={m_eff!r}")
    return math.sqrt(math.log(batch / m_eff))


def _arm(label: str, rho: float, mode: str) -> dict[str, Any]:
    """TrainConfig settings of one arm: ``sgd``, ``sam``, ``n-sam``, ``m-sam-m<m>``, ``rw-sam`` (the
    chapters' λ on raw scores), ``rw-sam-<uniform|weighted>-meff<k>`` (scale-free λ)."""
    if label == "sgd":
        return dict(optimizer="sgd")
    if label == "sam":
        return dict(optimizer="sam", rho=rho)
    if label == "n-sam":
        return dict(optimizer="n-sam", rho=rho, nsam_samples=256 if mode == "quick" else NSAM_SAMPLES)
    if label.startswith("m-sam-m"):
        m = int(label.removeprefix("m-sam-m"))
        # on a GPU the per-micro-batch loop is faster for two micro-batches, vmap beyond (the benchmark)
        return dict(optimizer="m-sam", rho=rho, m=m, options={"backend": "loop"} if m >= BATCH // 2 else {})
    rw: dict[str, Any] = dict(optimizer="rw-sam", rho=rho, delta=0.01)
    if label == "rw-sam":
        return rw | dict(lam=RW_RAW_LAM)
    descent, target = label.removeprefix("rw-sam-").split("-meff")
    options = {"weighted_descent": descent == "weighted", "standardize": True}
    return rw | dict(lam=round(lam_for_effective_batch(BATCH, int(target)), 4), options=options)


def _spec(
    label: str, model: str, dataset: str, mode: str, *, noise: float = 0.0, train: Mapping[str, Any] = {},
    arm: str | None = None, **extra: Any,
) -> RunSpec:
    """One run of a deciding experiment, in the settings of the paper's tables (``PAPER_NOTES``); ``arm``
    (default: the label without its noise suffix) names the optimizer settings (:func:`_arm`)."""
    rho = 0.05 if dataset == "cifar10" else 0.1
    _, (quick_model, quick_options) = PAPER_MODELS[model]
    n = 512 if mode == "quick" else None
    name, options = (quick_model, quick_options) if mode == "quick" else (model, {})
    base: dict[str, Any] = dict(
        epochs={"quick": 1, "standard": 10, "paper": 200}[mode], batch_size=BATCH, lr=0.1, momentum=0.9,
        weight_decay=5e-4, augment=True, eval_train=False, metrics=("trace_V",), metric_samples=1000,
    )
    kw = _arm(arm or label.split("-noise")[0], rho, mode)
    base |= dict(train)
    tags = {"optimizer": kw["optimizer"], "model": model, "dataset": dataset, **extra}
    for key in ("m", "lam"):
        if key in kw:
            tags[key] = kw[key]
    if "standardize" in kw.get("options", {}):
        tags |= {"lam_units": "score std", "weighted_descent": kw["options"]["weighted_descent"]}
    if noise:
        tags["noise"] = noise
    return RunSpec(label, DataSpec(dataset, n, n, label_noise=noise), name, TrainConfig(**kw, **base),
                   options, None, tags)


def _msweep(model: str, dataset: str, mode: str) -> list[RunSpec]:
    labels = ["sgd", "sam", *(f"m-sam-m{m}" for m in M_VALUES), "n-sam"]
    return [_spec(lab, model, dataset, mode) for lab in labels]


def _rwsam(model: str, dataset: str, mode: str) -> list[RunSpec]:
    labels = ["sam", f"m-sam-m{RW_TARGET}", "rw-sam", f"rw-sam-uniform-meff{RW_TARGET}",
              f"rw-sam-weighted-meff{RW_TARGET}"]
    return [_spec(lab, model, dataset, mode) for lab in labels]


def _lambda(mode: str) -> list[RunSpec]:
    labels = ["sam", *(f"rw-sam-{d}-meff{k}" for d in ("uniform", "weighted") for k in LAMBDA_TARGETS)]
    return [_spec(lab, "resnet18", "cifar10", mode, m_eff_target=_target(lab)) for lab in labels]


def _target(label: str) -> int:
    return BATCH if "-meff" not in label else int(label.split("-meff")[1])


NOISE_LEVELS = (0.2, 0.4, 0.6, 0.8)


def _noise(mode: str) -> list[RunSpec]:
    arms = ["sgd", "sam", f"m-sam-m{RW_TARGET}", f"rw-sam-uniform-meff{RW_TARGET}",
            f"rw-sam-weighted-meff{RW_TARGET}"]
    return [_spec(f"{a}-noise{round(p * 100)}", "resnet18", "cifar10", mode, noise=p,
                  train={"eval_train": True}) for p in NOISE_LEVELS for a in arms]


ESCAPE: dict[str, Any] = {"init_epochs": 100, "epochs": 50, "lr": 0.01, "init_lr": 0.05, "metric_every": 5}
"""The escape protocol of Figs. 1-2 (UNCONFIRMED). A poorly generalising minimum from SGD without
augmentation or weight decay (``init_epochs``, cosine from ``init_lr``), then each optimizer for
``epochs`` at a constant ``lr``, still without augmentation or weight decay, tr V every
``metric_every`` epochs."""


def _escape(mode: str) -> list[RunSpec]:
    epochs: dict[str, tuple[int, int, int]] = {
        "quick": (1, 1, 1), "standard": (10, 5, 1),
        "paper": (int(ESCAPE["init_epochs"]), int(ESCAPE["epochs"]), int(ESCAPE["metric_every"]))}
    init_epochs, epochs_after, every = epochs[mode]
    plain = dict(augment=False, weight_decay=0.0, eval_train=True)
    runs = [_spec("sgd-bad", "resnet18", "cifar10", mode, arm="sgd", phase="init",
                  train=plain | dict(epochs=init_epochs, lr=ESCAPE["init_lr"], metrics=()))]
    after = plain | dict(epochs=epochs_after, lr=ESCAPE["lr"], schedule="constant",
                         metric_epochs=tuple(range(0, epochs_after + 1, every)))
    for label in ["sgd", "n-sam", "sam", *(f"m-sam-m{m}" for m in M_VALUES)]:
        spec = _spec(label, "resnet18", "cifar10", mode, train=after)
        runs.append(RunSpec(spec.label, spec.data, spec.model, spec.train, spec.model_options, "sgd-bad",
                            spec.tags))
    return runs


_SHARED_NOTES = (
    " UNCONFIRMED for these experiments: m-SAM and n-SAM use SAM's radius for every m; m-SAM's perturbation "
    "per micro-batch of m (BatchNorm statistics per micro-batch); n-SAM's perturbation from the gradient of "
    f"the first {NSAM_SAMPLES} training samples; RW-SAM arms other than 'rw-sam' standardise the scores over "
    "the batch (standardize=True), so lambda is in units of the scores' spread, set by the effective batch "
    "it aims at for Gaussian scores, lambda = sqrt(ln(128 / m_eff)) ('-meff64': 0.83); 'rw-sam' keeps the "
    f"chapters' lambda {RW_RAW_LAM} on raw scores. tr V on the first 1000 training samples after the last "
    "epoch."
)

QUESTIONS: dict[str, str] = {}
"""Experiment name -> the open question it decides (chapter 6 lists them with their commands)."""

DECIDING: list[str] = []
"""The deciding experiments, in the order chapter 6 lists them."""


def _register(name: str, question: str, description: str, build: Any, notes: str) -> None:
    register(Experiment(name, description, build, PAPER_SEEDS, "06_reproduction",
                        PAPER_NOTES + _SHARED_NOTES + notes))
    QUESTIONS[name] = question
    DECIDING.append(name)


for _model in ("resnet18", "wrn28-10"):
    for _data in ("cifar10", "cifar100"):
        _register(
            f"msweep-{_model}-{_data}", "test error against m at scale (chapter 4's puzzle)",
            f"m-sharpness at scale: {_model} on {_data.upper()}, SGD / SAM / m-SAM (m = 64, 32, 16, 8) / "
            "n-SAM",
            lambda mode, m=_model, d=_data: _msweep(m, d, mode), "",
        )
for _model in ("resnet18", "wrn28-10"):
    for _data in ("cifar10", "cifar100"):
        _register(
            f"rwsam-{_model}-{_data}",
            "RW-SAM's descent pass; RW-SAM ≈ m-SAM(64) in accuracy, and at what cost (Table 6's tr V too)",
            f"RW-SAM both readings beside m-SAM(64): {_model} on {_data.upper()}, SAM / m-SAM(64) / RW-SAM "
            "(chapters' lambda) / RW-SAM uniform and weighted (scale-free lambda)",
            lambda mode, m=_model, d=_data: _rwsam(m, d, mode), "",
        )
_register(
    "lambda-resnet18-cifar10", "Table 5: RW-SAM's sensitivity to λ, both readings",
    "Table 5 at scale: RW-SAM over lambda on a scale-free footing (effective batch 112 ... 8), both descent "
    "readings, beside SAM; ResNet-18 on CIFAR-10",
    _lambda, " Table 5's model, data set and lambda values are UNCONFIRMED.",
)
_register(
    "noise-resnet18-cifar10",
    "Table 4 in a memorising regime: does RW-SAM's 80 % cell hold, in which reading?",
    "label noise 20-80 % with m-SAM(64) and both RW-SAM readings (train accuracy on noisy and clean labels); "
    "ResNet-18 on CIFAR-10",
    _noise, " Table 4's model, data set and noise model (a corrupted label moves to another class) are "
    "UNCONFIRMED.",
)
_register(
    "escape-resnet18-cifar10", "Figs. 1-2: escape from a poorly generalising minimum, faster for smaller m?",
    "Figs. 1-2 at scale: from an SGD minimum without augmentation or weight decay, SGD / n-SAM / SAM / "
    "m-SAM (64 ... 8): test accuracy every epoch, tr V every 5; ResNet-18 on CIFAR-10",
    _escape, f" The escape protocol is UNCONFIRMED: ESCAPE = {ESCAPE} (paper mode).",
)
