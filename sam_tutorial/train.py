"""One training loop for every optimizer of the SAM family, with evaluation, checkpoints and resume.

:func:`fit` trains a model on a :class:`~sam_tutorial.data.Dataset` as a :class:`TrainConfig` says:

.. code-block:: text

    for each epoch:
        for each batch (device-resident loader; crop+flip for images if config.augment):
            stats = opt.step(x, y, per-sample cross-entropy)   # SGD is SAM with rho = 0
            lr scheduler step (cosine over all steps, optional linear warm-up)
        evaluate: test loss/accuracy; train accuracy (eval mode) if config.eval_train
        metrics (tr V, sharpness, user hooks) at config.metric_epochs
        one host synchronisation; append to the history; atomic checkpoint

Step losses stay device tensors until the end of the epoch, so the GPU never waits for the host
inside an epoch. The checkpoint holds the model, the optimizer (including RW-SAM's probe generator),
the scheduler, the loader's generator, the global torch/NumPy/Python generators and the history; a
run killed at any point and started again with the same arguments continues from the last finished
epoch and ends with the same weights and history as an uninterrupted run (on the CPU, bit for bit).

>>> import torch
>>> from sam_tutorial.data import Dataset
>>> g = torch.Generator().manual_seed(0)
>>> x, y = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
>>> data = Dataset("toy", (x, y), (x, y), num_classes=3, clean_train_targets=y)
>>> _ = torch.manual_seed(0)
>>> model = torch.nn.Linear(5, 3)
>>> result = fit(model, data, TrainConfig(optimizer="sam", rho=0.05, epochs=2, batch_size=16, lr=0.1))
>>> result.history["epoch"], len(result.history["test_acc"])
([1, 2], 2)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from sam_tutorial.data import Dataset
from sam_tutorial.distributed import DistContext, shard, wrap
from sam_tutorial.loader import BatchLoader
from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM, PerturbedOptimizer
from sam_tutorial.optim.base import SCOPES
from sam_tutorial.results import config_hash, load_checkpoint, save_checkpoint

OPTIMIZERS: tuple[str, ...] = ("sgd", "sam", "usam", "nsam", "msam", "rwsam")
"""``optimizer`` values of :class:`TrainConfig`; ``sgd`` is SAM with rho = 0 (one pass)."""
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
METRICS: tuple[str, ...] = ("trace_V", "sharpness")
"""The built-in metrics, ``trace_V`` (:func:`sam_tutorial.noise.trace_V`) and ``sharpness``
(:func:`sam_tutorial.sharpness.sam_sharpness` with ``sharpness_rho``), on the first
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
        m: micro-batch size of ``msam`` (must divide ``batch_size``).
        lam: RW-SAM inverse temperature λ.
        delta: RW-SAM finite-difference step δ.
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
            (``dist=``, e.g. under torchrun): ``"local"`` perturbs with each rank's own gradient, i.e.
            m-SAM with m = the per-rank batch ``batch_size / world_size``; ``"global"`` with the
            all-reduced gradient, i.e. SAM on the global batch of ``batch_size``. Ignored in a single
            process; ``msam`` accepts ``"local"`` only. Left out of :meth:`to_dict` when ``"local"``,
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
        if not (isinstance(self.rho, int | float) and math.isfinite(self.rho) and self.rho >= 0):
            raise ValueError(f"rho must be a finite number >= 0, got {self.rho!r}")
        if self.optimizer == "sgd" and self.rho != 0:
            raise ValueError(f"rho must be 0 for optimizer='sgd' (got {self.rho}); use 'sam' for rho > 0")
        if self.optimizer == "msam" and not (isinstance(self.m, int) and 1 <= self.m):
            raise ValueError(f"optimizer='msam' needs m, a positive integer; got m={self.m!r}")
        if self.optimizer == "msam" and self.batch_size % self.m:  # type: ignore[operator]
            raise ValueError(f"m={self.m} must divide batch_size={self.batch_size}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {self.scope!r}")
        if self.optimizer == "msam" and self.scope != "local":
            raise ValueError("optimizer='msam' supports scope='local' only (m-SAM perturbs per micro-batch); "
                             "use optimizer='sam' with scope='global' for SAM on the global batch")
        if self.optimizer == "rwsam" and (self.lam is None or self.delta is None):
            raise ValueError("optimizer='rwsam' needs lam (>= 0) and delta (> 0)")
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


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: per-epoch lists (``epoch``, ``lr``, ``train_loss``, ``train_acc``, ``test_loss``,
            ``test_acc``, ``skipped``, ``seconds``; ``train_acc_clean`` with label noise) and
            ``metrics``: ``{"epoch": [...], name: [...]}`` for the metrics.
        final: the last epoch's losses and accuracies, the last value of every metric, and the number
            of skipped (non-finite) steps over the whole run.
        resumed_from: epochs already done in the checkpoint this call started from (0: fresh).
        model: the trained model.
        optimizer: the optimizer (its state is the end-of-training state).
    """

    history: dict[str, Any]
    final: dict[str, float | None]
    resumed_from: int
    model: nn.Module
    optimizer: PerturbedOptimizer


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
    opts = dict(config.options)
    if isinstance(model, DistributedDataParallel):
        opts.setdefault("scope", config.scope)
    kind = config.optimizer
    if kind == "sgd":
        return SAM(model, base, rho=0.0, **opts)
    if kind in ("sam", "usam"):
        return SAM(model, base, rho=config.rho, **({"normalize": False} if kind == "usam" else {}), **opts)
    if kind == "msam":
        return MSAM(model, base, rho=config.rho, m=int(config.m), **opts)  # type: ignore[arg-type]
    if kind == "rwsam":
        return RWSAM(model, base, rho=config.rho, lam=config.lam, delta=config.delta,  # type: ignore[arg-type]
                     seed=seed, **opts)
    device = next(model.parameters()).device
    x, y = data.train[0][: config.nsam_samples], data.train[1][: config.nsam_samples]
    return NSAM(model, base, rho=config.rho, data=(x.to(device), y.to(device)),
                chunk_size=config.eval_batch_size, **opts)


@torch.no_grad()
def evaluate(
    model: nn.Module, inputs: Tensor, targets: Tensor | tuple[Tensor, ...], batch_size: int = 1000
) -> tuple[Tensor, ...]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) as 0-d device tensors (no host sync).

    Args:
        model: the network; its train/eval mode is restored afterwards.
        inputs: ``[N, ...]``.
        targets: ``[N]`` labels, or a tuple of label tensors (one accuracy each, e.g. noisy and clean).
        batch_size: samples per forward pass.

    Returns:
        ``(loss, accuracy)`` w.r.t. the first target tensor, then the accuracy w.r.t. each further one.
    """
    tgts = targets if isinstance(targets, tuple) else (targets,)
    was_training = model.training
    model.eval()
    device = inputs.device
    loss = torch.zeros((), device=device)
    correct = torch.zeros(len(tgts), device=device)
    for start in range(0, len(inputs), batch_size):
        out = model(inputs[start : start + batch_size])
        loss += cross_entropy(out, tgts[0][start : start + batch_size]).sum()
        pred = out.argmax(1)
        for k, t in enumerate(tgts):
            correct[k] += (pred == t[start : start + batch_size]).sum()
    model.train(was_training)
    n = max(1, len(inputs))
    return (loss / n, correct[0] / n, *(correct[1:] / n))


def builtin_metrics(config: TrainConfig, data: Dataset, device: torch.device) -> dict[str, Metric]:
    """Hooks for ``config.metrics`` on the first ``config.metric_samples`` training samples.

    ``sam_tutorial.noise`` and ``sam_tutorial.sharpness`` are imported only when asked for.
    """
    x = data.train[0][: config.metric_samples].to(device)
    y = data.train[1][: config.metric_samples].to(device)
    hooks: dict[str, Metric] = {}
    if "trace_V" in config.metrics:
        from sam_tutorial.noise import trace_V

        hooks["trace_V"] = lambda model: trace_V(model, cross_entropy, x, y)
    if "sharpness" in config.metrics:
        from sam_tutorial.sharpness import sam_sharpness

        hooks["sharpness"] = lambda model: sam_sharpness(model, cross_entropy, x, y, rho=config.sharpness_rho)
    return hooks


def _rng_state() -> dict[str, Any]:
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "python": [py[0], list(py[1]), py[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    checkpoint: str | Path | None = None,
    fingerprint: str | None = None,
    progress: bool = False,
    desc: str | None = None,
    metrics: Mapping[str, Metric] | None = None,
    init_state: Mapping[str, Tensor] | None = None,
    dist: DistContext | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` as ``config`` says; resume from ``checkpoint`` if it exists.

    Args:
        model: the network (moved to ``device``).
        data: training and test sets.
        config: hyper-parameters (:class:`TrainConfig`).
        seed: seeds the loader's generator (data order, augmentation) and RW-SAM's probes. The global
            generators are used as they are (seed them before building the model).
        device: where to train (default: the model's device).
        checkpoint: file for the per-epoch checkpoint; if it exists, training resumes from it.
        fingerprint: identifies the run in the checkpoint (default: a hash of ``config``, ``seed``,
            the data set's name, size and noise, the model's parameter shapes and the metric names).
        progress: show a tqdm progress bar.
        desc: the progress bar's label.
        metrics: extra hooks ``name -> fn(model) -> 0-d tensor``, evaluated with the built-in ones.
        init_state: a ``state_dict`` loaded into the model before a fresh start (not on resume).
        dist: this process's place among several (:func:`sam_tutorial.distributed.init_from_env`
            under torchrun, with the process group initialised). With ``world_size > 1`` the model is
            wrapped in ``DistributedDataParallel`` and the optimizer gets ``config.scope``; every rank
            draws the same global batches of ``config.batch_size`` (same loader seed) and steps on its
            own :func:`~sam_tutorial.distributed.shard`; ``train_loss`` is averaged over the ranks;
            every rank evaluates the full test set (the weights are identical); only rank 0 writes the
            checkpoint and shows the progress bar; all ranks resume from the same checkpoint. The
            default fingerprint then includes the world size.

    Returns:
        A :class:`FitResult` (``model`` is the plain module, not its DDP wrapper).

    Raises:
        ValueError: if the batch size exceeds the training set, or a metric name is taken twice; under
            ``dist``, if the batch size is not a multiple of the world size (or, for ``msam``, the
            per-rank batch is not a multiple of ``m``).
        sam_tutorial.results.CheckpointError: if ``checkpoint`` is corrupted or belongs to another run.
    """
    ctx = dist if dist is not None and dist.distributed else None  # None: one process
    main = dist is None or dist.is_main
    if ctx is not None:
        if config.batch_size % ctx.world_size:
            raise ValueError(f"batch_size={config.batch_size} (the global batch) must be a multiple of the "
                             f"world size {ctx.world_size}")
        per_rank = config.batch_size // ctx.world_size
        if config.optimizer == "msam" and per_rank % config.m:  # type: ignore[operator]
            raise ValueError(f"m={config.m} must divide the per-rank batch batch_size / world_size = "
                             f"{per_rank}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    net = model  # the plain module: evaluated, checkpointed and returned
    hooks = builtin_metrics(config, data, device)
    for name, fn in (metrics or {}).items():
        if name in hooks:
            raise ValueError(f"metric {name!r} is defined twice (built-in and in metrics=)")
        hooks[name] = fn
    metric_epochs = set(config.metric_epochs) or ({config.epochs} if hooks else set())
    if fingerprint is None:
        fingerprint = config_hash({
            "config": config.to_dict(), "seed": seed, "data": [data.name, data.info.get("n_train"),
            data.label_noise], "params": [list(p.shape) for p in model.parameters()],
            "metrics": sorted(hooks),
            **({"world_size": ctx.world_size, "scope": config.scope} if ctx is not None else {}),
        })

    loader = BatchLoader(*data.train, config.batch_size, augment=config.augment,
                         fill=data.pad_fill if data.pad_fill is not None else 0.0, device=device, seed=seed)
    if ctx is not None:
        model = wrap(net, ctx)
    opt = make_optimizer(model, config, data, seed=seed)
    steps = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt.base, _Cosine(config.epochs * steps, config.warmup_epochs * steps, config.schedule == "cosine")
    )
    noisy = bool(data.label_noise > 0)
    history: dict[str, Any] = {k: [] for k in (
        "epoch", "lr", "train_loss", "train_acc", *(["train_acc_clean"] if noisy else []),
        "test_loss", "test_acc", "skipped", "seconds")}
    history["metrics"] = {"epoch": [], **{name: [] for name in hooks}}

    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, fingerprint)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])
        _set_rng_state(state["rng"])
        history, start = state["history"], int(state["epoch"])
    elif init_state is not None:
        net.load_state_dict(init_state)
    resumed_from = start

    def run_metrics(epoch: int) -> list[Tensor]:
        if epoch not in metric_epochs:
            return []
        was_training = net.training
        out = [hooks[name](net).detach().reshape(()).float() for name in hooks]
        net.train(was_training)
        return out

    def record_metrics(epoch: int, values: list[float]) -> None:
        if values:
            history["metrics"]["epoch"].append(epoch)
            for name, v in zip(hooks, values):
                history["metrics"][name].append(v)

    if start == 0:
        record_metrics(0, torch.stack(run_metrics(0)).tolist() if 0 in metric_epochs and hooks else [])

    test_x, test_y = data.test[0].to(device), data.test[1].to(device)
    train_targets: tuple[Tensor, ...] = (loader.targets,)
    if noisy:
        train_targets += (data.clean_train_targets.to(device),)
    bar = tqdm(total=config.epochs * steps, initial=start * steps, desc=desc, disable=not (progress and main),
               leave=False, dynamic_ncols=True)
    try:
        for epoch in range(start + 1, config.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            lr = opt.base.param_groups[0]["lr"]  # base: its list is replaced by load_state_dict
            loss_sum = torch.zeros((), device=device)
            skipped = torch.zeros((), device=device)
            for x, y in loader:
                if ctx is not None:
                    x, y = shard((x, y), ctx)
                stats = opt.step(x, y, cross_entropy)
                loss_sum += stats.loss.detach().float()
                skipped += stats.skipped.float()
                sched.step()
                bar.update(1)
            if ctx is not None:  # the mean loss over the global batches
                torch.distributed.all_reduce(loss_sum)
                loss_sum /= ctx.world_size
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            test_loss, test_acc = evaluate(net, test_x, test_y, batch_size=config.eval_batch_size)
            tracked = {"train_loss": loss_sum / steps, "skipped": skipped, "test_loss": test_loss,
                       "test_acc": test_acc}
            if config.eval_train:
                accs = evaluate(net, loader.inputs, train_targets, config.eval_batch_size)[1:]
                tracked.update(zip(("train_acc", "train_acc_clean"), accs))
            extra = run_metrics(epoch)
            values = torch.stack([t.reshape(()).float() for t in [*tracked.values(), *extra]]).tolist()
            row = dict(zip(tracked, values))  # the one host synchronisation of the epoch
            row.update(epoch=epoch, lr=lr, seconds=seconds, skipped=int(row["skipped"]))
            for key in history:
                if key != "metrics":
                    history[key].append(row.get(key))
            record_metrics(epoch, values[len(tracked) :])
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", test_acc=f"{row['test_acc']:.3f}", refresh=False)
            if checkpoint is not None and main:
                save_checkpoint(checkpoint, {
                    "epoch": epoch, "model": net.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "loader": loader.state_dict(),
                    "rng": _rng_state(), "history": history,
                }, fingerprint)
    finally:
        bar.close()

    final: dict[str, float | None] = {
        k: v[-1] for k, v in history.items()
        if k not in ("metrics", "epoch", "lr", "seconds", "skipped") and v
    }
    final["skipped"] = sum(history["skipped"])
    for name in hooks:
        if history["metrics"][name]:
            final[name] = history["metrics"][name][-1]
    return FitResult(history=history, final=final, resumed_from=resumed_from, model=net, optimizer=opt)
