"""One training loop for every optimizer of the SAM family, with evaluation, checkpoints and resume.

:func:`fit` trains a model on a :class:`~sam_tutorial.engine.data.Dataset` as a
:class:`~sam_tutorial.engine.train_config.TrainConfig` says:

.. code-block:: text

    for each epoch:
        for each batch (device-resident loader; crop+flip for images if config.augment):
            stats = opt.step(x, y, per-sample cross-entropy)   # SGD is SAM with rho = 0
            step metrics summed on the device (||e||, RW-SAM's 1/sum p_i^2, weight on mislabelled samples)
            lr scheduler step (cosine over all steps, optional linear warm-up)
        evaluate: test loss/accuracy; train accuracy (eval mode) if config.eval_train
        metrics (tr V, sharpness, user hooks) at config.metric_epochs
        one host synchronisation; append to the history; atomic checkpoint

Step losses and step metrics stay device tensors until the end of the epoch, so the GPU never waits
for the host inside an epoch; ``history["step"]`` holds each step metric's mean over every epoch's steps
(:data:`~sam_tutorial.engine.measure.STEP_METRICS` are built in; ``step_metrics=`` adds hooks
``fn(stats, indices) -> 0-d tensor``).
The checkpoint holds the model, the optimizer (including RW-SAM's probe generator), the scheduler, the
loader's generator, the global torch/NumPy/Python generators and the history; a run killed at any point and
started again with the same arguments continues from the last finished epoch and ends with the same weights
and history as an uninterrupted run (on the CPU, bit for bit).

>>> import torch
>>> from sam_tutorial.engine.data import Dataset
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

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sam_tutorial.config import check_device, check_seed, rng_state, set_rng_state
from sam_tutorial.engine.data import Dataset
from sam_tutorial.engine.distributed import DistContext, shard, wrap
from sam_tutorial.engine.loader import BatchLoader
from sam_tutorial.engine.measure import STEP_METRICS, StepMetric, builtin_metrics, evaluate, step_values
from sam_tutorial.engine.storage import (
    CheckpointError,
    check_model_state,
    config_hash,
    load_checkpoint,
    save_checkpoint,
)
from sam_tutorial.engine.train_config import Metric, TrainConfig, _Cosine, cross_entropy, make_optimizer
from sam_tutorial.optim import PerturbedOptimizer

__all__ = ["FitResult", "fit", "split_validation"]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: per-epoch lists (``epoch``, ``lr``, ``train_loss``, ``train_acc``, ``test_loss``,
            ``test_acc``, ``skipped``, ``seconds``; ``train_acc_clean`` with label noise),
            ``metrics``: ``{"epoch": [...], name: [...]}`` for the metrics, and ``step``:
            ``{name: [...]}``, each step metric's mean over the steps of every epoch.
        final: the last epoch's losses and accuracies, the last value of every metric and step metric,
            and the number of skipped (non-finite) steps over the whole run.
        resumed_from: epochs already done in the checkpoint this call started from (0: fresh).
        model: the trained model.
        optimizer: the optimizer (its state is the end-of-training state).
    """

    history: dict[str, Any]
    final: dict[str, float | None]
    resumed_from: int
    model: nn.Module
    optimizer: PerturbedOptimizer


def split_validation(data: Dataset, fraction: float) -> tuple[Dataset, tuple[Tensor, ...]]:
    """Hold out the last ``round(fraction * N)`` training samples as a validation split.

    Returns:
        The data set without them (its ``clean_train_targets`` cut alike) and ``(inputs, labels)`` of the
        split, plus its clean labels when the data carry label noise (the labels a practitioner has are
        the noisy ones; the clean ones are kept only to report).

    Raises:
        ValueError: if the split or the remaining training set would be empty.
    """
    n = len(data.train[1])
    n_val = round(fraction * n)
    if not 0 < n_val < n:
        raise ValueError(f"val_fraction={fraction} holds out {n_val} of the {n} training samples; choose it "
                         "so that both the validation split and the training set are non-empty")
    x, y = data.train
    cut = n - n_val
    rest = replace(data, train=(x[:cut], y[:cut]), clean_train_targets=data.clean_train_targets[:cut],
                   info={**data.info, "n_train": cut, "n_val": n_val})
    val: tuple[Tensor, ...] = (x[cut:], y[cut:])
    if data.label_noise > 0:
        val += (data.clean_train_targets[cut:],)
    return rest, val


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
    ctx: DistContext | None = None,
    step_metrics: Mapping[str, StepMetric] | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` as ``config`` says; resume from ``checkpoint`` if it exists.

    Args:
        model: the network (moved to ``device``).
        data: training and test sets.
        config: hyper-parameters (:class:`~sam_tutorial.engine.train_config.TrainConfig`).
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
        step_metrics: extra per-step hooks ``name -> fn(stats, indices) -> 0-d tensor``
            (:data:`~sam_tutorial.engine.measure.StepMetric`), averaged per epoch into ``history["step"]``
            beside the built-in :data:`~sam_tutorial.engine.measure.STEP_METRICS`.
        ctx: this process's place among several (:func:`sam_tutorial.engine.distributed.init_from_env`
            under torchrun, with the process group initialised). With ``world_size > 1`` the model is
            wrapped in ``DistributedDataParallel`` and the optimizer gets ``config.scope``; every rank
            draws the same global batches of ``config.batch_size`` (same loader seed) and steps on its
            own :func:`~sam_tutorial.engine.distributed.shard`; ``train_loss`` is averaged over the ranks;
            every rank evaluates the full test set (the weights are identical); only rank 0 writes the
            checkpoint and shows the progress bar; all ranks resume from the same checkpoint. The
            default fingerprint then includes the world size.

    Returns:
        A :class:`FitResult` (``model`` is the plain module, not its DDP wrapper).

    Raises:
        ValueError: if the batch size exceeds the training set, or a metric or step metric name is taken
            twice; under
            ``ctx``, if the batch size is not a multiple of the world size (or, for ``m-sam``, the
            per-rank batch is not a multiple of ``m``).
        sam_tutorial.engine.storage.CheckpointError: if ``checkpoint`` is corrupted or belongs to another run.
    """
    main = ctx is None or ctx.is_main
    if ctx is not None and not ctx.distributed:
        ctx = None  # one process
    _check_arguments(model, data, config, seed)
    _check_world(config, ctx)
    val: tuple[Tensor, ...] = ()
    if config.val_fraction > 0:
        data, val = split_validation(data, config.val_fraction)
    device = check_device("device", device) if device is not None else next(model.parameters()).device
    model.to(device)
    hooks = builtin_metrics(config, data, device)
    for name, fn in (metrics or {}).items():
        if name in hooks:
            raise ValueError(f"metric {name!r} is defined twice (built-in and in metrics=)")
        hooks[name] = fn
    step_hooks = dict(step_metrics or {})
    taken = sorted(set(step_hooks) & set(STEP_METRICS))
    if taken:
        raise ValueError(f"step metrics {taken} are built in (STEP_METRICS); give your hooks other names")
    if fingerprint is None:
        fingerprint = config_hash({
            "config": config.to_dict(), "seed": seed, "data": [data.name, data.info.get("n_train"),
            data.label_noise], "params": [list(p.shape) for p in model.parameters()],
            "metrics": sorted(hooks),
            **({"world_size": ctx.world_size, "scope": config.scope} if ctx is not None else {}),
        })
    loop = _Loop(model, data, config, seed, device, hooks, ctx, val, step_hooks)
    start = loop.resume(checkpoint, fingerprint, init_state)
    bar = tqdm(total=config.epochs * loop.steps, initial=start * loop.steps, desc=desc,
               disable=not (progress and main), leave=False, dynamic_ncols=True)
    try:
        for epoch in range(start + 1, config.epochs + 1):
            row = loop.epoch(epoch, bar)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", test_acc=f"{row['test_acc']:.3f}", refresh=False)
            if checkpoint is not None and main:
                loop.save(checkpoint, fingerprint, epoch)
    finally:
        bar.close()
    return FitResult(history=loop.history, final=loop.final(), resumed_from=start, model=loop.net,
                     optimizer=loop.opt)


def _check_arguments(model: nn.Module, data: Dataset, config: TrainConfig, seed: int) -> None:
    """Refuse arguments of the wrong kind, and a model that cannot classify ``data``, before anything
    changes: one forward pass of two training samples in eval mode, without gradients."""
    kinds: tuple[tuple[str, object, type], ...] = (
        ("model", model, nn.Module), ("data", data, Dataset), ("config", config, TrainConfig))
    for name, value, kind in kinds:
        if not isinstance(value, kind):
            raise ValueError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
    check_seed("seed", seed)
    params = list(model.parameters())
    if not any(p.requires_grad for p in params):
        raise ValueError("model has no parameter with requires_grad=True: there is nothing to train")
    x, y = data.train
    if len(x) != len(y) or y.ndim != 1 or y.dtype not in (torch.int64, torch.uint8):
        raise ValueError(f"data.train must be inputs [N, ...] and int64 labels [N] (what cross-entropy "
                         f"takes); got {tuple(x.shape)} and {y.dtype} {tuple(y.shape)}")
    for split, labels in (("train", y), ("test", data.test[1])):
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= data.num_classes):
            raise ValueError(f"data.{split} labels must lie in [0, num_classes={data.num_classes}), found "
                             f"[{int(labels.min())}, {int(labels.max())}]")
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2].to(params[0].device))
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"model cannot take the inputs of data set {data.name!r} (one input has shape "
                         f"{data.input_shape}, dtype {x.dtype}): {type(err).__name__}: {err}") from err
    finally:
        for m, flag in flags:
            m.training = flag
    if not isinstance(out, torch.Tensor) or out.shape != (len(x[:2]), data.num_classes):
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must return logits [B, num_classes={data.num_classes}] for data set "
                         f"{data.name!r}; it returns {found} for a batch of {len(x[:2])}")


def _check_world(config: TrainConfig, ctx: DistContext | None) -> None:
    """Refuse global batches that the ranks (and m-SAM's micro-batches) cannot share evenly."""
    if ctx is None:
        return
    if config.batch_size % ctx.world_size:
        raise ValueError(f"batch_size={config.batch_size} (the global batch) must be a multiple of the "
                         f"world size {ctx.world_size}")
    per_rank = config.batch_size // ctx.world_size
    if config.optimizer == "m-sam" and config.m is not None and per_rank % config.m:
        raise ValueError(f"m={config.m} must divide the per-rank batch batch_size / world_size = {per_rank}")


_CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "loader", "rng", "history")
"""What :meth:`_Loop.save` writes."""


class _Loop:
    """The state of one run of :func:`fit`: loader, optimizer, schedule, history; one method per phase."""

    def __init__(self, model: nn.Module, data: Dataset, config: TrainConfig, seed: int, device: torch.device,
                 hooks: dict[str, Metric], ctx: DistContext | None, val: tuple[Tensor, ...] = (),
                 step_hooks: Mapping[str, StepMetric] | None = None) -> None:
        self.net = model  # the plain module: evaluated, checkpointed and returned
        self.config, self.hooks, self.ctx, self.device = config, hooks, ctx, device
        self.step_hooks = dict(step_hooks or {})
        self.metric_epochs = set(config.metric_epochs) or ({config.epochs} if hooks else set())
        self.loader = BatchLoader(*data.train, config.batch_size, augment=config.augment,
                                  fill=data.pad_fill if data.pad_fill is not None else 0.0, device=device,
                                  seed=seed)
        self.model = wrap(model, ctx) if ctx is not None else model
        self.opt = make_optimizer(self.model, config, data, seed=seed)
        self.steps = len(self.loader)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt.base, _Cosine(
            config.epochs * self.steps, config.warmup_epochs * self.steps, config.schedule == "cosine"))
        noisy = bool(data.label_noise > 0)
        self.history: dict[str, Any] = {k: [] for k in (
            "epoch", "lr", "train_loss", "train_acc", *(["train_acc_clean"] if noisy else []),
            "test_loss", "test_acc", *(["val_loss", "val_acc"] if val else []),
            *(["val_acc_clean"] if len(val) > 2 else []), "skipped", "seconds")}
        self.history["metrics"] = {"epoch": [], **{name: [] for name in hooks}}
        self.history["step"] = {}
        self.mislabelled = data.noisy.to(device).float() if noisy else None
        self.test_x, self.test_y = data.test[0].to(device), data.test[1].to(device)
        self.val = tuple(t.to(device) for t in val)
        self.train_targets: tuple[Tensor, ...] = (self.loader.targets,)
        if noisy:
            self.train_targets += (data.clean_train_targets.to(device),)

    def resume(self, checkpoint: str | Path | None, fingerprint: str,
               init_state: Mapping[str, Tensor] | None) -> int:
        """Load the checkpoint if there is one (return its epoch), else start fresh (0)."""
        if checkpoint is not None and Path(checkpoint).exists():
            state = load_checkpoint(checkpoint, fingerprint)
            lacking = [k for k in _CHECKPOINT_KEYS if k not in state]
            if lacking:
                raise CheckpointError(f"{checkpoint} lacks {lacking}: it was not written by fit(); delete it "
                                      "to start this run from scratch")
            check_model_state(self.net, state["model"], checkpoint)  # before anything is loaded
            self.opt.load_state_dict(state["optimizer"])
            self.net.load_state_dict(state["model"])
            self.sched.load_state_dict(state["scheduler"])
            self.loader.load_state_dict(state["loader"])
            set_rng_state(state["rng"])
            self.history = state["history"]
            self.history.setdefault("step", {})  # a checkpoint from before step metrics
            return int(state["epoch"])
        if init_state is not None:
            check_model_state(self.net, init_state, "init_state")
            self.net.load_state_dict(init_state)
        if 0 in self.metric_epochs and self.hooks:
            self._record_metrics(0, torch.stack(self._run_metrics(0)).tolist())
        return 0

    def _run_metrics(self, epoch: int) -> list[Tensor]:
        if epoch not in self.metric_epochs:
            return []
        was_training = self.net.training
        out = [self.hooks[name](self.net).detach().reshape(()).float() for name in self.hooks]
        self.net.train(was_training)
        return out

    def _record_metrics(self, epoch: int, values: list[float]) -> None:
        if values:
            self.history["metrics"]["epoch"].append(epoch)
            for name, v in zip(self.hooks, values):
                self.history["metrics"][name].append(v)

    def _train_epoch(self, bar: Any) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One pass over the loader; the step losses and step metrics are summed on the device.

        Returns:
            ``{"train_loss", "skipped"}`` and each step metric's mean over the epoch's steps.
        """
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        skipped = torch.zeros((), device=self.device)
        sums: dict[str, Tensor] = {}
        for x, y, idx in self.loader.with_indices():
            if self.ctx is not None:
                x, y, idx = shard((x, y, idx), self.ctx)
            stats = self.opt.step(x, y, cross_entropy)
            loss_sum += stats.loss.detach().float()
            skipped += stats.skipped.float()
            values = step_values(stats, idx, self.mislabelled)
            values.update((name, fn(stats, idx)) for name, fn in self.step_hooks.items())
            for name, v in values.items():
                v = v.detach().reshape(()).float()
                sums[name] = sums[name] + v if name in sums else v.clone()
            self.sched.step()
            bar.update(1)
        step = {name: v / self.steps for name, v in sums.items()}
        if self.ctx is not None:  # the mean loss (and step metrics) over the global batches and ranks
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= self.ctx.world_size
            for v in step.values():
                torch.distributed.all_reduce(v)
                v /= self.ctx.world_size
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return {"train_loss": loss_sum / self.steps, "skipped": skipped}, step

    def epoch(self, epoch: int, bar: Any) -> dict[str, Any]:
        """Train one epoch, evaluate, take the metrics; one host synchronisation; append to the history."""
        t0 = time.perf_counter()
        lr = self.opt.base.param_groups[0]["lr"]  # base: its list is replaced by load_state_dict
        tracked, step = self._train_epoch(bar)
        seconds = time.perf_counter() - t0
        bs = self.config.eval_batch_size
        test_loss, test_acc = evaluate(self.net, self.test_x, self.test_y, batch_size=bs)
        tracked.update(test_loss=test_loss, test_acc=test_acc)
        if self.val:
            tracked.update(zip(("val_loss", "val_acc", "val_acc_clean"),
                               evaluate(self.net, self.val[0], self.val[1:], bs)))
        if self.config.eval_train:
            accs = evaluate(self.net, self.loader.inputs, self.train_targets, bs)[1:]
            tracked.update(zip(("train_acc", "train_acc_clean"), accs))
        extra = self._run_metrics(epoch)
        tensors = [*tracked.values(), *step.values(), *extra]
        values = torch.stack([t.reshape(()).float() for t in tensors]).tolist()
        row: dict[str, Any] = dict(zip(tracked, values))  # the one host synchronisation of the epoch
        row.update(epoch=epoch, lr=lr, seconds=seconds, skipped=int(row["skipped"]))
        for key in self.history:
            if key not in ("metrics", "step"):
                self.history[key].append(row.get(key))
        for name, v in zip(step, values[len(tracked) : len(tracked) + len(step)]):
            self.history["step"].setdefault(name, []).append(v)
        self._record_metrics(epoch, values[len(tracked) + len(step):])
        return row

    def save(self, checkpoint: str | Path, fingerprint: str, epoch: int) -> None:
        save_checkpoint(checkpoint, {
            "epoch": epoch, "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "loader": self.loader.state_dict(),
            "rng": rng_state(), "history": self.history,
        }, fingerprint)

    def final(self) -> dict[str, float | None]:
        """The last epoch's values, the last value of every metric, the skipped steps of the run."""
        final: dict[str, float | None] = {
            k: v[-1] for k, v in self.history.items()
            if k not in ("metrics", "step", "epoch", "lr", "seconds", "skipped") and v
        }
        for name, series in self.history.get("step", {}).items():
            if series:
                final[name] = series[-1]
        final["skipped"] = sum(self.history["skipped"])
        for name in self.hooks:
            if self.history["metrics"][name]:
                final[name] = self.history["metrics"][name][-1]
        return final
