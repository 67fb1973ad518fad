"""One training loop for every optimizer of the SAM family, with evaluation, checkpoints and resume.

:func:`fit` trains a model on a :class:`~sam_tutorial.engine.data.Dataset` as a :class:`TrainConfig` says:

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sam_tutorial.config import rng_state, set_rng_state
from sam_tutorial.engine.data import Dataset
from sam_tutorial.engine.distributed import DistContext, shard, wrap
from sam_tutorial.engine.loader import BatchLoader
from sam_tutorial.engine.storage import config_hash, load_checkpoint, save_checkpoint
from sam_tutorial.engine.train_config import Metric, TrainConfig, _Cosine, cross_entropy, make_optimizer
from sam_tutorial.optim import PerturbedOptimizer

__all__ = ["FitResult", "builtin_metrics", "evaluate", "fit"]


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

    ``sam_tutorial.sgn.variance`` and ``sam_tutorial.curvature.sharpness`` are imported only when asked for.
    """
    x = data.train[0][: config.metric_samples].to(device)
    y = data.train[1][: config.metric_samples].to(device)
    hooks: dict[str, Metric] = {}
    if "trace_V" in config.metrics:
        from sam_tutorial.sgn.variance import trace_V

        hooks["trace_V"] = lambda model: trace_V(model, cross_entropy, x, y)
    if "sharpness" in config.metrics:
        from sam_tutorial.curvature.sharpness import sam_sharpness

        hooks["sharpness"] = lambda model: sam_sharpness(model, cross_entropy, x, y, rho=config.sharpness_rho)
    return hooks


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
        dist: this process's place among several (:func:`sam_tutorial.engine.distributed.init_from_env`
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
        ValueError: if the batch size exceeds the training set, or a metric name is taken twice; under
            ``dist``, if the batch size is not a multiple of the world size (or, for ``m-sam``, the
            per-rank batch is not a multiple of ``m``).
        sam_tutorial.engine.storage.CheckpointError: if ``checkpoint`` is corrupted or belongs to another run.
    """
    ctx = dist if dist is not None and dist.distributed else None  # None: one process
    main = dist is None or dist.is_main
    if ctx is not None:
        if config.batch_size % ctx.world_size:
            raise ValueError(f"batch_size={config.batch_size} (the global batch) must be a multiple of the "
                             f"world size {ctx.world_size}")
        per_rank = config.batch_size // ctx.world_size
        if config.optimizer == "m-sam" and per_rank % config.m:  # type: ignore[operator]
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
        set_rng_state(state["rng"])
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
                    "rng": rng_state(), "history": history,
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
