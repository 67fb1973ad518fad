r"""What one optimizer step costs, measured by counting: forward and backward passes (module hooks),
parameter-sized buffers the optimizer holds (walking its attributes), and step times (interleaved
repeats, reported as ratios).

Expected counts (paper §2, claim C10), for a batch of B samples:

============ ============================ ================================================
variant      passes                       notes
============ ============================ ================================================
SGD          1 forward, 1 backward
SAM, USAM    2 forward, 2 backward        strictly sequential
n-SAM        ceil(n/c)+1 fwd, as many bwd pass 1 over the n samples of ``data`` in chunks c
m-SAM (loop) 2B/m forward, 2B/m backward  the same samples as SAM, in B/m serial pieces
RW-SAM       3 forward, 2 backward        one extra forward at w + δz, without gradient
============ ============================ ================================================

>>> import torch
>>> from sam_tutorial.optim import SAM
>>> model = torch.nn.Linear(3, 2)
>>> opt = SAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05)
>>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
>>> c = count_passes(model, lambda: opt.step(x, y, torch.nn.CrossEntropyLoss(reduction="none")))
>>> c.forward, c.backward, c.forward_samples
(2, 2, 16)
"""


from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from sam_tutorial.config import LossFn
from sam_tutorial.optim import PerturbedOptimizer

__all__ = [
    "BufferCount",
    "Factory",
    "PassCount",
    "PlainStep",
    "OpCount",
    "count_buffers",
    "count_ops",
    "count_passes",
    "held_tensors",
    "step_times",
    "sync",
]


Factory = Callable[[nn.Module, torch.optim.Optimizer], PerturbedOptimizer]
"""Builds an optimizer of the family from a model and a base optimizer."""


class PassCount(NamedTuple):
    """Passes through a model during one call."""

    forward: int
    """forward calls of the model."""

    backward: int
    """backward passes through the model's output (``backward()`` or ``torch.autograd.grad``)."""

    forward_samples: int
    """samples summed over the forward calls (dim 0 of the output)."""

    backward_samples: int
    """samples summed over the backward passes."""

    no_grad_forward: int
    """forward calls made without autograd (e.g. RW-SAM's probe)."""


def count_passes(model: nn.Module, step: Callable[[], Any]) -> PassCount:
    """Count the passes ``step()`` makes through ``model``.

    A forward hook on the model counts each call and, when the output requires grad, hooks the output
    tensor: that hook fires once per backward pass through it. Under :mod:`torch.func` transforms
    (m-SAM's ``"vmap"`` backend) the hooks see one traced call, so count with ``backend="loop"``.

    Args:
        model: the module whose passes are counted (hooks are removed afterwards).
        step: runs one optimizer step.
    """
    fwd, bwd, fs, bs, nograd = [0], [0], [0], [0], [0]

    def on_backward(size: int) -> Callable[[Tensor], None]:
        def hook(_: Tensor) -> None:
            bwd[0] += 1
            bs[0] += size

        return hook

    def on_forward(module: nn.Module, inputs: object, output: Tensor) -> None:
        size = int(output.shape[0]) if output.dim() else 1
        fwd[0] += 1
        fs[0] += size
        if output.requires_grad:
            output.register_hook(on_backward(size))
        else:
            nograd[0] += 1

    handle = model.register_forward_hook(on_forward)
    try:
        step()
    finally:
        handle.remove()
    return PassCount(fwd[0], bwd[0], fs[0], bs[0], nograd[0])


def held_tensors(obj: object, *, exclude: Iterable[Tensor] = ()) -> list[Tensor]:
    """Tensors reachable from ``obj``'s attributes, one per distinct storage.

    Walks ``vars()`` of objects, lists, tuples and dicts (not into modules, optimizers other than
    ``obj``, or generators). Tensors that share storage with ``exclude`` (e.g. the parameters and
    their gradients) are left out; of several views of one storage, the largest is kept.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude if isinstance(t, Tensor)}
    seen_ids: set[int] = set()
    found: dict[int, Tensor] = {}

    def walk(x: object, top: bool = False) -> None:
        if id(x) in seen_ids:
            return
        seen_ids.add(id(x))
        if isinstance(x, Tensor):
            key = x.untyped_storage().data_ptr()
            if x.numel() and key not in excluded and (key not in found or x.numel() > found[key].numel()):
                found[key] = x
            return
        if not top and isinstance(x, nn.Module | torch.optim.Optimizer | torch.Generator):
            return
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list | tuple | set):
            for v in x:
                walk(v)
        elif hasattr(x, "__dict__") and not isinstance(x, type):
            for v in vars(x).values():
                walk(v)

    walk(obj, top=True)
    return list(found.values())


class BufferCount(NamedTuple):
    """Memory an optimizer holds beyond the parameters and their gradients.

    Parameter-sized tensors (a parameter's shape, or one flat tensor of a whole group of parameters)
    are counted in units of the number of trainable parameters; anything else (data sets, per-sample
    scores) in numbers.
    """

    optimizer: float
    """parameter-sized tensors held by the optimizer object (weight backups, probes, guards ...)."""

    base_state: float
    """parameter-sized tensors in the base optimizer's ``state`` (e.g. momentum)."""

    other_numbers: int
    """numbers in the other tensors the optimizer holds (e.g. n-SAM's ``data``, RW-SAM's weights)."""


def count_buffers(optimizer: object, model: nn.Module) -> BufferCount:
    """Parameter-sized buffers held by ``optimizer`` after it has stepped (see :class:`BufferCount`);
    take two steps first, since some buffers are created on the second.

    The parameters, their gradients and the model's own buffers are not counted. For a wrapper with a
    ``base`` optimizer (the SAM family) the base's ``state`` is counted apart; for a plain
    ``torch.optim.Optimizer`` its whole ``state`` is ``base_state``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    size = sum(p.numel() for p in params)
    shapes = {tuple(p.shape) for p in params}
    own = params + [p.grad for p in params if p.grad is not None] + list(model.buffers())

    def split(tensors: list[Tensor]) -> tuple[float, int]:
        sized = [t for t in tensors if tuple(t.shape) in shapes or (t.dim() == 1 and t.numel() == size)]
        other = sum(t.numel() for t in tensors) - sum(t.numel() for t in sized)
        return sum(t.numel() for t in sized) / size, other

    base = getattr(optimizer, "base", optimizer if isinstance(optimizer, torch.optim.Optimizer) else None)
    base_tensors = held_tensors(base.state, exclude=own) if base is not None else []
    base_units, _ = split(base_tensors)
    if base is optimizer:
        return BufferCount(0.0, base_units, 0)
    units, other = split(held_tensors(optimizer, exclude=own + base_tensors))
    return BufferCount(units, base_units, other)


class PlainStep:
    """A plain ``torch.optim`` optimizer behind the SAM family's ``step(inputs, targets, loss_fn)``:
    zero the gradients, one forward and backward of the mean loss, the base step."""

    def __init__(self, model: nn.Module, base: torch.optim.Optimizer) -> None:
        self.model, self.base = model, base

    def step(self, inputs: Tensor, targets: Tensor, loss_fn: LossFn) -> Tensor:
        self.base.zero_grad(set_to_none=True)
        loss = loss_fn(self.model(inputs), targets).mean()
        loss.backward()
        self.base.step()
        return loss.detach()


class OpCount(NamedTuple):
    """Operators dispatched during one call (after autograd and ``torch.func`` expanded them)."""

    kernels: int
    """Operators that run a kernel, a proxy for GPU kernel launches (a foreach op counts once)."""

    dispatched: int
    """every operator, views and metadata included (host-side cost)."""

    syncs: int
    """Host synchronisations (``.item()``, ``bool()`` of a tensor, ``nonzero``, ``equal``)."""


NO_KERNEL_OPS = frozenset({
    "view", "_unsafe_view", "t", "transpose", "expand", "permute", "unsqueeze", "squeeze", "slice", "select",
    "as_strided", "detach", "alias", "split", "split_with_sizes", "unbind", "view_as_real", "_reshape_alias",
    "reshape", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh",
    "chunk", "narrow", "unfold", "diagonal", "real", "imag", "_conj", "resolve_conj", "resolve_neg", "set_",
    "_has_compatible_shallow_copy_type", "is_same_size", "sym_size", "sym_stride", "sym_numel",
    "promote_types", "_record_function_enter_new", "_record_function_exit", "_has_same_storage_numel",
})
"""Operators that launch no kernel (views, allocation without initialisation, metadata, profiler marks)."""

SYNC_OPS = frozenset({"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "item"})
"""Operators that wait for the device to hand a value to the host."""


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def count_ops(step: Callable[[], Any]) -> OpCount:
    """The operators one call of ``step`` dispatches, counted by a ``TorchDispatchMode``.

    Independent of the device's speed and of machine load, so ratios of counts can be compared across
    machines; on a GPU each kernel-running operator is (about) one kernel launch.

    >>> model, x = torch.nn.Linear(3, 2), torch.ones(4, 3)
    >>> count_ops(lambda: model(x))  # one addmm (its transposed weight is a view)
    OpCount(kernels=1, dispatched=2, syncs=0)
    """
    with _Counter() as counter:
        step()
    names = counter.names
    return OpCount(
        kernels=sum(n not in NO_KERNEL_OPS for n in names),
        dispatched=len(names),
        syncs=sum(n in SYNC_OPS for n in names),
    )


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA) so that a host clock measures the work; a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(
    factories: dict[str, Callable[[nn.Module], Any]],
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFn,
    *,
    steps: int = 10,
    repeats: int = 3,
    warmup: int = 2,
    cpu_threads: int | None = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, np.ndarray]:
    """Seconds per step of each optimizer, one number per repeat.

    Every optimizer trains its own deep copy of ``model`` on the same batch. After ``warmup`` untimed
    steps each, the repeats take turns: in each repeat every optimizer runs ``steps`` timed steps, so
    a change in machine load affects all of them alike. Ratios to a reference are best taken repeat by
    repeat. On a CPU the timing runs on ``cpu_threads`` threads (restored afterwards): on a shared or
    busy machine, several threads per process fight for the cores and distort the ratios.

    Args:
        factories: name -> ``factory(model)`` returning an object with ``step(inputs, targets, loss_fn)``.
        model: the network (on the device to time).
        inputs, targets: one batch on the model's device.
        loss_fn: per-sample losses.
        steps: timed steps per repeat.
        repeats: number of repeats.
        warmup: untimed steps first.
        cpu_threads: torch's intra-op threads while timing on a CPU (``None``: leave unchanged).
        clock: the timer (seconds).

    Returns:
        name -> array ``[repeats]`` of mean seconds per step.

    Raises:
        ValueError: for ``steps < 1``, ``repeats < 1`` or ``warmup < 0``.
    """
    if steps < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1, repeats >= 1, warmup >= 0; got {steps}, {repeats}, {warmup}")
    device = inputs.device
    threads = torch.get_num_threads()
    if cpu_threads is not None and device.type == "cpu":
        torch.set_num_threads(cpu_threads)
    try:
        return _time(factories, model, inputs, targets, loss_fn, steps, repeats, warmup, clock)
    finally:
        torch.set_num_threads(threads)


def _time(
    factories: dict[str, Callable[[nn.Module], Any]],
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFn,
    steps: int,
    repeats: int,
    warmup: int,
    clock: Callable[[], float],
) -> dict[str, np.ndarray]:
    device = inputs.device
    opts = {}
    for name, factory in factories.items():
        opts[name] = factory(copy.deepcopy(model))
        for _ in range(warmup):
            opts[name].step(inputs, targets, loss_fn)
    out: dict[str, list[float]] = {name: [] for name in factories}
    for _ in range(repeats):
        for name, opt in opts.items():
            sync(device)
            start = clock()
            for _ in range(steps):
                opt.step(inputs, targets, loss_fn)
            sync(device)
            out[name].append((clock() - start) / steps)
    return {name: np.asarray(ts) for name, ts in out.items()}
