"""What one training run is: :class:`TrainConfig` (validated, hashable, JSON round-trip), the
optimizer it builds (:func:`make_optimizer`: SGD or a member of the SAM family over a torch SGD base)
and its learning-rate schedule (cosine with optional linear warm-up, or constant, stepped per iteration).

>>> cfg = TrainConfig(optimizer="m-sam", rho=0.05, m=16)
>>> TrainConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sam_tutorial.config import check_nonneg
from sam_tutorial.engine.data import Dataset
from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM, PerturbedOptimizer
from sam_tutorial.optim.base import SCOPES

__all__ = ["METRICS", "Metric", "OPTIMIZERS", "SCHEDULES", "TrainConfig", "cross_entropy", "make_optimizer"]


OPTIMIZERS: tuple[str, ...] = ("sgd", "sam", "usam", "n-sam", "m-sam", "rw-sam")
"""``optimizer`` values of :class:`TrainConfig`; ``sgd`` is SAM with rho = 0 (one pass)."""


SCHEDULES: tuple[str, ...] = ("cosine", "constant")


METRICS: tuple[str, ...] = ("trace_V", "sharpness")
"""The built-in metrics, ``trace_V`` (:func:`sam_tutorial.sgn.variance.trace_V`) and ``sharpness``
(:func:`sam_tutorial.curvature.sharpness.sam_sharpness` with ``sharpness_rho``), on the first
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
        metric_epochs: epochs after which ``metrics`` (and hooks passed to :func:`fit`) are computed;
            0 means before training; empty means after the last epoch only.
        metric_samples: training samples (the first ones) the built-in metrics use.
        sharpness_rho: radius of the ``sharpness`` metric.
        nsam_samples: training samples (the first ones) whose gradient builds n-SAM's perturbation
            (``None``: all).
        scope: where the perturbation comes from when :func:`fit` runs on several processes
            (``ctx=``, e.g. under torchrun): ``"local"`` perturbs with each rank's own gradient, i.e.
            m-SAM with m = the per-rank batch ``batch_size / world_size``; ``"global"`` with the
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
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "metric_epochs", tuple(sorted(set(self.metric_epochs))))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        check_nonneg("rho", self.rho)
        if self.optimizer == "sgd" and self.rho != 0:
            raise ValueError(f"rho must be 0 for optimizer='sgd' (got {self.rho}); use 'sam' for rho > 0")
        if self.optimizer == "m-sam" and not (isinstance(self.m, int) and 1 <= self.m):
            raise ValueError(f"optimizer='m-sam' needs m, a positive integer; got m={self.m!r}")
        if self.optimizer == "m-sam" and self.batch_size % self.m:  # type: ignore[operator]
            raise ValueError(f"m={self.m} must divide batch_size={self.batch_size}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {self.scope!r}")
        if self.optimizer == "m-sam" and self.scope != "local":
            raise ValueError("optimizer='m-sam' supports scope='local' only (m-SAM perturbs per "
                             "micro-batch); use optimizer='sam' with scope='global' for SAM on the global "
                             "batch")
        if self.optimizer == "rw-sam" and (self.lam is None or self.delta is None):
            raise ValueError("optimizer='rw-sam' needs lam (>= 0) and delta (> 0)")
        for name in ("epochs", "batch_size", "eval_batch_size", "metric_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"metrics must be among {', '.join(METRICS)}; got {unknown}")
        if any(not 0 <= e <= self.epochs for e in self.metric_epochs):
            raise ValueError(f"metric_epochs must lie in [0, epochs={self.epochs}], got {self.metric_epochs}")

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
