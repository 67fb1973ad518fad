"""DistributedDataParallel helpers: a process group from torchrun's environment, per-rank data shards.

The optimizers take the DDP-wrapped model and a ``scope`` (``sam_tutorial.optim.base``): with
``scope="local"`` every rank perturbs with its own gradient, which is m-SAM with m = the per-rank batch
and costs one gradient all-reduce per step; ``scope="global"`` perturbs with the all-reduced gradient
(SAM on the global batch, two all-reduces).

Typical use, launched with ``torchrun --nproc_per_node N train.py``:

.. code-block:: python

    ctx = init_from_env()                          # gloo on CPU, nccl on CUDA
    model = wrap(build_model().to(ctx.device), ctx)
    opt = SAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, scope="local")
    for x, y in batches:                           # the same global batches on every rank
        x, y = shard((x, y), ctx)                  # this rank's contiguous part
        opt.step(x, y, loss_fn)
    destroy()

Outside torchrun (no ``WORLD_SIZE`` in the environment), :func:`init_from_env` returns a one-process
context and initialises nothing, so the same script runs on one device.

A named experiment runs the same way from the command line, ``torchrun --nproc_per_node N -m
sam_tutorial run NAME``: :func:`sam_tutorial.engine.train.fit` takes the context as ``ctx=`` (see there and
:mod:`sam_tutorial.engine.runs`).
"""


from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sam_tutorial.config import check_int

__all__ = ["DistContext", "destroy", "init_from_env", "launched_world_size", "shard", "wrap"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    def __post_init__(self) -> None:
        check_int("DistContext.world_size", self.world_size)
        check_int("DistContext.local_rank", self.local_rank, low=0)
        rank = self.rank
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < self.world_size:
            raise ValueError(f"DistContext.rank={self.rank!r} is outside the world: a rank is an integer in "
                             f"[0, world_size={self.world_size})")
        if not isinstance(self.device, torch.device):
            raise ValueError(f"DistContext.device must be a torch.device, got {self.device!r}")

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes results)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env(backend: str | None = None, device: str | None = None) -> DistContext:
    """Initialise the default process group from torchrun's environment variables.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and torchrun's ``MASTER_ADDR``/``MASTER_PORT``).
    On CUDA each process takes the GPU ``LOCAL_RANK``.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default nccl when CUDA is available, else gloo.
        device: ``"cpu"`` or ``"cuda"``; default CUDA when available.

    Returns:
        The process's :class:`DistContext`; ``world_size == 1`` without torchrun.

    Raises:
        ValueError: on an unknown backend or device, or a malformed environment.
    """
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}")
    if backend not in (None, "gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo', 'nccl' or None, got {backend!r}")
    world, rank = _world_and_rank()
    try:
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ValueError(f"LOCAL_RANK must be an integer: {err}") from None
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        unset = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v, "").strip()]
        if unset:
            raise ValueError(f"WORLD_SIZE={world} but {' and '.join(unset)} unset: launch with torchrun "
                             f"--nproc_per_node {world}, or unset WORLD_SIZE and RANK to run in one process")
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"))
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


def _world_and_rank() -> tuple[int, int]:
    """``WORLD_SIZE`` and ``RANK`` from the environment (1 and 0 where unset).

    Raises:
        ValueError: if they are not integers, or ``RANK`` is outside ``[0, WORLD_SIZE)``.
    """
    raw_world = os.environ.get("WORLD_SIZE", "").strip() or "1"
    raw_rank = os.environ.get("RANK", "").strip() or "0"
    try:
        world, rank = int(raw_world), int(raw_rank)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={raw_world!r} and RANK={raw_rank!r} must be integers; unset them "
                         "to run in one process") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world}); unset WORLD_SIZE and RANK to run "
                         "in one process")
    return world, rank


def launched_world_size() -> int:
    """The world size torchrun launched this process into (1 when ``WORLD_SIZE`` is unset or 1).

    The command line calls this before it joins a process group, so that a ``WORLD_SIZE`` left in the
    shell (by an earlier torchrun session, a job script ...) is reported instead of waiting forever for
    peers that will never come: torchrun always sets ``TORCHELASTIC_RUN_ID`` as well.

    Raises:
        ValueError: if ``WORLD_SIZE``/``RANK`` are not integers, ``RANK`` is outside the world, or
            ``WORLD_SIZE > 1`` without torchrun; the message says which variables to unset.
    """
    if os.environ.get("WORLD_SIZE", "").strip() in ("", "1"):
        return 1
    world, rank = _world_and_rank()
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        raise ValueError(
            f"WORLD_SIZE={world} (RANK={rank}) is set in the environment, but this process was not started "
            "by torchrun, so no peer will join it. Unset WORLD_SIZE, RANK and LOCAL_RANK to run in one "
            "process, "
            f"or launch with `torchrun --nproc_per_node {world} -m sam_tutorial run ...`."
        )
    return world


def wrap(model: nn.Module, ctx: DistContext, **ddp_kwargs: object) -> nn.Module:
    """Wrap ``model`` (already on ``ctx.device``) in DistributedDataParallel when distributed."""
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **ddp_kwargs)  # type: ignore[arg-type]


def shard(tensors: Tensor | tuple[Tensor, ...], ctx: DistContext) -> Tensor | tuple[Tensor, ...]:
    """This rank's contiguous part of a global batch (dim 0), so that the ranks' parts concatenated in
    rank order give the global batch back.

    Raises:
        ValueError: if the batch size is not a multiple of the world size, or the tensors disagree on
            it (inputs and targets of different lengths would be paired wrongly). A rank outside the
            world cannot occur: :class:`DistContext` refuses it.

    >>> ctx = DistContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    >>> shard(torch.arange(6), ctx)
    tensor([3, 4, 5])
    """
    if not isinstance(ctx, DistContext):
        raise ValueError(f"ctx must be a DistContext, got {type(ctx).__name__}")
    parts = tensors if isinstance(tensors, tuple) else (tensors,)
    if not parts or not all(isinstance(t, Tensor) and t.dim() > 0 for t in parts):
        raise ValueError("shard: tensors must be a tensor or a non-empty tuple of tensors with the batch "
                         "on dim 0")
    n = parts[0].shape[0]
    lengths = [t.shape[0] for t in parts]
    if len(set(lengths)) > 1:
        raise ValueError(f"shard: the tensors disagree on the batch size (dim 0): {lengths}; inputs and "
                         "targets must have one row per sample, or the shards would pair the wrong rows")
    if n % ctx.world_size:
        raise ValueError(f"the batch of {n} samples must be a multiple of the world size {ctx.world_size}")
    b = n // ctx.world_size
    out = tuple(t[ctx.rank * b : (ctx.rank + 1) * b] for t in parts)
    return out if isinstance(tensors, tuple) else out[0]


def destroy() -> None:
    """Tear the default process group down, if one is up."""
    if dist.is_initialized():
        dist.destroy_process_group()
