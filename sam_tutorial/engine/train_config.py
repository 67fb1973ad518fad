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
from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM, PerturbedOptimizer
from sam_tutorial.optim.base import SCOPES

__all__ = ["METRICS", "Metric", "OPTIMIZERS", "SCHEDULES", "TrainConfig", "cross_entropy", "make_optimizer"]


OPTIMIZERS: tuple[str, ...] = ("sgd", "sam", "usam", "n-sam", "m-sam", "rw-sam")
"""``optimizer`` values of :class:`TrainConfig`; ``sgd`` is SAM with rho = 0 (one pass)."""


SCHEDULES: tuple[str, ...] = ("cosine", "constant")


_CLASSES: dict[str, type[PerturbedOptimizer]] = {
    "sgd": SAM, "sam": SAM, "usam": SAM, "n-sam": NSAM, "m-sam": MSAM, "rw-sam": RWSAM}
"""The class :func:`make_optimizer` builds for each ``optimizer``."""


_COMMON = {"self", "model", "base", "rho"}
_SET_BY_CONFIG: dict[str, set[str]] = {
    "sgd": _COMMON, "sam": _COMMON, "usam": _COMMON | {"normalize"},
    "n-sam": _COMMON | {"data", "chunk_size"}, "m-sam": _COMMON | {"m"},
    "rw-sam": _COMMON | {"lam", "delta", "seed"}}
"""Keyword arguments :func:`make_optimizer` fills from the configuration (not accepted in ``options``)."""


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
        m: micro-batch size of ``m-sam`` (must divide ``batch_size``).
        lam: RW-SAM inverse temperature λ.
        delta: RW-SAM's probe radius ‖w⁺ − w‖ (a radius, valid for any model size; 0.01 is typical).
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
        nsam_samples: training samples (the first ones) whose gradient builds n-SAM's perturbation
            (``None``: all).
        scope: where the perturbation comes from when :func:`~sam_tutorial.engine.train.fit` runs on several
            processes (``ctx=``, e.g. under torchrun): ``"local"`` perturbs with each rank's own gradient,
            i.e. m-SAM with m = the per-rank batch ``batch_size / world_size``; ``"global"`` with the
            all-reduced gradient, i.e. SAM on the global batch of ``batch_size``. Ignored in a single
            process; ``m-sam`` accepts ``"local"`` only. Left out of :meth:`to_dict` when ``"local"``,
            so the cache keys of existing runs do not change.
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
        for name, accepted in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("scope", SCOPES)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in accepted:
                raise ValueError(f"{name} must be one of {', '.join(accepted)}; got {value!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "metric_samples"):
            check_int(name, getattr(self, name))
        check_int("warmup_epochs", self.warmup_epochs, low=0)
        for name in ("rho", "lr", "weight_decay", "sharpness_rho"):
            check_nonneg(name, getattr(self, name))
        check_nonneg("momentum", self.momentum, below=1)
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
        if kind == "sgd" and self.rho != 0:
            raise ValueError(f"rho must be 0 for optimizer='sgd' (got {self.rho}); use 'sam' for rho > 0")
        owners = {"m": "m-sam", "lam": "rw-sam", "delta": "rw-sam", "nsam_samples": "n-sam"}
        for name, owner in owners.items():
            if getattr(self, name) is not None and kind != owner:
                raise ValueError(f"{name}={getattr(self, name)!r} is a setting of optimizer={owner!r} only; "
                                 f"optimizer={kind!r} would ignore it (leave it None)")
        if kind == "m-sam":
            if self.m is None:
                raise ValueError("optimizer='m-sam' needs m, an integer >= 1")
            check_int("m", self.m)
            if self.batch_size % self.m:
                raise ValueError(f"m={self.m} must divide batch_size={self.batch_size}")
            if self.scope != "local":
                raise ValueError("optimizer='m-sam' supports scope='local' only (m-SAM perturbs per "
                                 "micro-batch); use optimizer='sam' with scope='global' for SAM on the "
                                 "global batch")
        if kind == "rw-sam":
            if self.lam is None or self.delta is None:
                raise ValueError("optimizer='rw-sam' needs lam (>= 0) and delta (> 0)")
            check_nonneg("lam", self.lam)
            check_nonneg("delta", self.delta, positive=True)
        if self.nsam_samples is not None:
            check_int("nsam_samples", self.nsam_samples)
        cls = _CLASSES[kind]
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            accepted = sorted(set(params) - _SET_BY_CONFIG[kind])
            unknown = sorted(set(self.options) - set(accepted))
            if unknown:
                raise ValueError(f"options {unknown} are not keyword arguments that optimizer={kind!r} "
                                 f"({cls.__name__}) takes from options; accepted: {', '.join(accepted)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists); :meth:`from_dict` inverts it.

        ``scope`` appears only when it is not the default ``"local"`` (it was added later; leaving it
        out keeps the hashes, and so the cached results, of earlier configurations valid).
        """
        out = asdict(self) | {"options": dict(self.options)}
        if out["scope"] == "local":
            del out["scope"]
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
    if kind == "sgd":
        return SAM(model, base, rho=0.0, **opts)
    if kind in ("sam", "usam"):
        if kind == "usam":
            opts["normalize"] = False
        return SAM(model, base, rho=config.rho, **opts)
    if kind == "m-sam":
        return MSAM(model, base, rho=config.rho, m=int(config.m), **opts)  # type: ignore[arg-type]
    if kind == "rw-sam":
        return RWSAM(model, base, rho=config.rho, lam=config.lam, delta=config.delta,  # type: ignore[arg-type]
                     seed=seed, **opts)
    device = next(model.parameters()).device
    x, y = data.train[0][: config.nsam_samples], data.train[1][: config.nsam_samples]
    return NSAM(model, base, rho=config.rho, data=(x.to(device), y.to(device)),
                chunk_size=config.eval_batch_size, **opts)
