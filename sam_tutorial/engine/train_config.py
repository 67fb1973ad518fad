"""What one training run is: :class:`TrainConfig` (validated, hashable, JSON round-trip), the
optimizer it builds (:func:`make_optimizer`: SGD or a member of the SAM family over a torch SGD base)
and its learning-rate schedule (cosine with optional linear warm-up, or constant, stepped per iteration).

>>> cfg = TrainConfig(optimizer="m-sam", rho=0.05, m=16)
>>> TrainConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sam_tutorial.config import check_bool, check_int, check_nonneg
from sam_tutorial.engine.data import Dataset
from sam_tutorial.optim import PerturbedOptimizer
from sam_tutorial.optim.base import SCOPES
from sam_tutorial.optim.variants import REGISTRY

__all__ = ["METRICS", "Metric", "OPTIMIZERS", "SCHEDULES", "TrainConfig", "cross_entropy", "make_optimizer"]


OPTIMIZERS: tuple[str, ...] = tuple(REGISTRY)
"""``optimizer`` values of :class:`TrainConfig`: every variant of :data:`sam_tutorial.optim.variants.REGISTRY`
(``sgd`` is SAM with rho = 0, one pass)."""


SCHEDULES: tuple[str, ...] = ("cosine", "constant")


_FIELD_SETTINGS = ("m", "lam", "delta")
"""Variant settings that are fields of :class:`TrainConfig` (any other setting goes in ``options``)."""
_NEEDS = {"m": "an integer >= 1 dividing batch_size", "lam": ">= 0", "delta": "> 0"}


def _owners(setting: str) -> tuple[str, ...]:
    """The optimizers that take ``setting`` (``nsam_samples`` belongs to those that take ``data``)."""
    key = "data" if setting == "nsam_samples" else setting
    return tuple(name for name, v in REGISTRY.items() if key in v.settings)


def _accepts(name: str, keyword: str) -> bool:
    return keyword in inspect.signature(REGISTRY[name].cls.__init__).parameters


def _set_by_config(name: str) -> set[str]:
    """Keyword arguments :func:`make_optimizer` fills from the configuration (not accepted in ``options``)."""
    v = REGISTRY[name]
    out = {"self", "model", "base", "rho", *v.fixed, *(s for s in v.settings if s in _FIELD_SETTINGS)}
    if "data" in v.settings:
        out |= {"data", "chunk_size"}
    if _accepts(name, "seed"):
        out.add("seed")
    return out


METRICS: tuple[str, ...] = ("trace_V", "sharpness", "trace_H")
"""The built-in metrics, ``trace_V`` (:func:`sam_tutorial.sgn.variance.trace_V`), ``sharpness``
(:func:`sam_tutorial.curvature.sharpness.sam_sharpness` with ``sharpness_rho``) and ``trace_H``
(:func:`sam_tutorial.curvature.hutchinson.hessian_trace`, 32 Rademacher probes), on the first
``metric_samples`` training samples."""


Metric = Callable[[nn.Module], Tensor]
"""The type of a metric hook, called with the model (in eval mode) and returning a 0-d tensor."""


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-sample cross-entropy, shape ``[B]`` (the loss of every experiment)."""
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run besides the data, the model and the seed.

    Attributes:
        optimizer: one of :data:`OPTIMIZERS`.
        rho: SAM radius (must be 0 for ``sgd``).
        m: micro-batch size of ``m-sam`` and ``m-usam`` (must divide ``batch_size``).
        lam: RW-SAM inverse temperature λ.
        delta: RW-SAM's probe radius δ = ‖w⁺ − w‖ (a radius, valid for any model size; 0.01 is typical).
        options: further keyword arguments of the optimizer class (e.g. ``backend`` for m-SAM,
            ``normalize_probe`` or ``weighted_descent`` for RW-SAM, ``normalize`` for any).
        epochs: passes over the training set.
        batch_size: samples per step (the last incomplete batch of an epoch is dropped).
        lr: peak learning rate of the base SGD.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (on every parameter).
        nesterov: Nesterov momentum.
        schedule: ``"cosine"`` (per step, from ``lr`` to 0) or ``"constant"``.
        warmup_epochs: linear warm-up from 0 over this many epochs (before the cosine).
        augment: random crop (padding 4) and horizontal flip; images only.
        eval_train: evaluate the training set after every epoch (``train_acc``).
        eval_batch_size: batch size of evaluation passes (and of n-SAM's full-gradient pass).
        metrics: names from :data:`METRICS` computed at ``metric_epochs``.
        metric_epochs: epochs after which ``metrics`` (and hooks passed to
            :func:`~sam_tutorial.engine.train.fit`) are computed;
            0 means before training; empty means after the last epoch only.
        metric_samples: training samples (the first ones) the built-in metrics use.
        sharpness_rho: radius of the ``sharpness`` metric.
        nsam_samples: training samples (the first ones) whose gradient builds the perturbation of
            ``n-sam`` and ``n-usam`` (``None``: all).
        scope: where the perturbation comes from when :func:`~sam_tutorial.engine.train.fit` runs on several
            processes (``ctx=``, e.g. under torchrun): ``"local"`` perturbs with each rank's own gradient,
            i.e. m-SAM with m = the per-rank batch ``batch_size / world_size``; ``"global"`` with the
            all-reduced gradient, i.e. SAM on the global batch of ``batch_size``. Ignored in a single
            process; ``m-sam`` and ``m-usam`` accept ``"local"`` only. Left out of :meth:`to_dict` when
            ``"local"``, so the cache keys of existing runs do not change.
        val_fraction: the fraction of the training set (its last samples, with the labels they carry)
            held out as a validation split: not trained on, evaluated after every epoch (``val_loss``,
            ``val_acc``; ``val_acc_clean`` with label noise), so hyper-parameters can be chosen without
            the test set. 0 (the default) holds out nothing and is left out of :meth:`to_dict`.
    """

    optimizer: str = "sgd"
    rho: float = 0.0
    m: int | None = None
    lam: float | None = None
    delta: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_epochs: int = 0
    augment: bool = False
    eval_train: bool = True
    eval_batch_size: int = 1000
    metrics: tuple[str, ...] = ()
    metric_epochs: tuple[int, ...] = ()
    metric_samples: int = 1000
    sharpness_rho: float = 0.05
    nsam_samples: int | None = None
    scope: str = "local"
    val_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.options, Mapping):
            raise ValueError(f"options must be a mapping of optimizer keyword arguments (a dict), got "
                             f"{self.options!r}")
        for name in ("metrics", "metric_epochs"):
            value = getattr(self, name)
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise ValueError(f"{name} must be a tuple (or list), got {value!r}")
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        for e in self.metric_epochs:
            check_int("metric_epochs entries", e, low=0)
        object.__setattr__(self, "metric_epochs", tuple(sorted(set(self.metric_epochs))))
        for name, accepted in (("optimizer", tuple(REGISTRY)), ("schedule", SCHEDULES), ("scope", SCOPES)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in accepted:
                raise ValueError(f"{name} must be one of {', '.join(accepted)}; got {value!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "metric_samples"):
            check_int(name, getattr(self, name))
        check_int("warmup_epochs", self.warmup_epochs, low=0)
        for name in ("rho", "lr", "weight_decay", "sharpness_rho"):
            check_nonneg(name, getattr(self, name))
        check_nonneg("momentum", self.momentum, below=1)
        check_nonneg("val_fraction", self.val_fraction, below=1)
        for name in ("nesterov", "augment", "eval_train"):
            check_bool(name, getattr(self, name))
        self._check_variant()
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0 (torch's SGD refuses Nesterov without "
                             "momentum)")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"metrics must be among {', '.join(METRICS)}; got {unknown}")
        if any(not 0 <= e <= self.epochs for e in self.metric_epochs):
            raise ValueError(f"metric_epochs must lie in [0, epochs={self.epochs}], got {self.metric_epochs}")

    def _check_variant(self) -> None:
        """The settings of one variant (m, lam, delta, nsam_samples, options) belong to that variant only."""
        kind = self.optimizer
        variant = REGISTRY[kind]
        if variant.fixed.get("rho", self.rho) != self.rho:
            raise ValueError(f"rho must be {variant.fixed['rho']:g} for optimizer={kind!r} (got {self.rho}); "
                             "use 'sam' for rho > 0")
        for name in (*_FIELD_SETTINGS, "nsam_samples"):
            owners = _owners(name)
            if getattr(self, name) is not None and kind not in owners:
                owned = " or ".join(map(repr, owners)) or "none"
                raise ValueError(f"{name}={getattr(self, name)!r} is a setting of optimizer={owned} only; "
                                 f"optimizer={kind!r} would ignore it (leave it None)")
        needed = [s for s in _FIELD_SETTINGS if s in variant.settings]
        if any(getattr(self, s) is None for s in needed):
            needs = " and ".join(f"{s} ({_NEEDS[s]})" for s in needed)
            raise ValueError(f"optimizer={kind!r} needs {needs}")
        if "m" in variant.settings:
            check_int("m", self.m)
            if self.batch_size % self.m:  # type: ignore[operator]
                raise ValueError(f"m={self.m} must divide batch_size={self.batch_size}")
            if self.scope != "local":
                raise ValueError(f"optimizer={kind!r} supports scope='local' only (it perturbs per "
                                 "micro-batch); use optimizer='sam' with scope='global' for SAM on the "
                                 "global batch")
        if "lam" in variant.settings:
            check_nonneg("lam", self.lam)
        if "delta" in variant.settings:
            check_nonneg("delta", self.delta, positive=True)
        if self.nsam_samples is not None:
            check_int("nsam_samples", self.nsam_samples)
        params = inspect.signature(variant.cls.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            accepted = sorted(set(params) - _set_by_config(kind))
            unknown = sorted(set(self.options) - set(accepted))
            if unknown:
                raise ValueError(f"options {unknown} are not keyword arguments that optimizer={kind!r} "
                                 f"({variant.cls.__name__}) takes from options; accepted: "
                                 f"{', '.join(accepted)}")
        variant.cls.check_options(self.options)  # each value has its argument's type: "False" is not False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists); :meth:`from_dict` inverts it.

        ``scope`` and ``val_fraction`` appear only when they are not their defaults (they were added
        later; leaving them out keeps the hashes, and so the cached results, of earlier configurations valid).
        """
        out = asdict(self) | {"options": dict(self.options)}
        if out["scope"] == "local":
            del out["scope"]
        if out["val_fraction"] == 0:
            del out["val_fraction"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from :meth:`to_dict` output.

        Raises:
            ValueError: on an unknown key.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; accepted: {', '.join(sorted(names))}")
        kw = dict(data)
        for key in ("metrics", "metric_epochs"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


class _Cosine:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine from 1 to 0 (or constant)."""

    def __init__(self, total: int, warmup: int, cosine: bool) -> None:
        self.total, self.warmup, self.cosine = total, warmup, cosine

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine:
            return 1.0
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def make_optimizer(
    model: nn.Module, config: TrainConfig, data: Dataset, *, seed: int = 0
) -> PerturbedOptimizer:
    """The SAM-family optimizer ``config`` names, over a fresh ``torch.optim.SGD`` base.

    Args:
        model: the model (already on its device); a ``DistributedDataParallel`` model gets
            ``scope=config.scope``.
        config: the training configuration.
        data: the data set (n-SAM's perturbation uses its training set).
        seed: seeds RW-SAM's probe generator.
    """
    base = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )
    opts: dict[str, Any] = dict(config.options)
    if isinstance(model, DistributedDataParallel):
        opts.setdefault("scope", config.scope)
    kind = config.optimizer
    variant = REGISTRY[kind]
    opts["rho"] = config.rho
    for name in _FIELD_SETTINGS:
        if name in variant.settings:
            opts[name] = getattr(config, name)
    if "data" in variant.settings:
        device = next(model.parameters()).device
        x, y = data.train[0][: config.nsam_samples], data.train[1][: config.nsam_samples]
        opts["data"] = (x.to(device), y.to(device))
        if _accepts(kind, "chunk_size"):
            opts["chunk_size"] = config.eval_batch_size
    if _accepts(kind, "seed"):
        opts["seed"] = seed
    return variant.make(model, base, **opts)
