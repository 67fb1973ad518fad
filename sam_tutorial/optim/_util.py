"""Private helpers of the optimizer engine: argument checks, batches, weight backups, bitwise selection.

Nothing here is public API; :mod:`sam_tutorial.optim.base` and the variants use it. The optimizer package
imports nothing of ours outside itself, so this is the one copy of rho validation it uses.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

__all__: list[str] = []  # private module

EPS = 1e-12
"""Added to ``||g||`` before dividing, as in Foret et al.'s reference code."""

PerSampleLoss = Callable[[nn.Module, Any], Tensor]
"""``fn(model, batch) -> Tensor[B]``: the per-sample losses of ``model`` on ``batch``."""


# ----------------------------------------------------------------------------- argument checks
def check_real(name: str, value: Any, *, low: float = 0.0, strict: bool = False,
               high: float | None = None, finite: bool = True) -> float:
    """``value`` as a float if it is a real number (numpy scalars included, bool not) in range.

    Raises:
        ValueError: naming ``name`` and the accepted range.
    """
    rng = f"{'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
    expected = f"{name} must be a {'finite ' if finite else ''}number {rng}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{expected}, got {value!r} of type {type(value).__name__}")
    x = float(value)
    if math.isnan(x) or (finite and math.isinf(x)) or x < low or (strict and x == low) or (
        high is not None and x > high
    ):
        raise ValueError(f"{expected}, got {value!r}")
    return x


def check_rho(rho: Any) -> float:
    """The perturbation radius: a finite number >= 0."""
    return check_real("rho", rho)


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` as an int if it is an integer >= ``low`` (numpy integers included, bool not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_int_or_none(name: str, value: Any, low: int = 1) -> int | None:
    if value is None:
        return None
    try:
        return check_int(name, value, low)
    except ValueError:
        raise ValueError(f"{name} must be an integer >= {low} or None, got {value!r}") from None


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


# ----------------------------------------------------------------------------- batches
def _is_sample_tensor(x: Any) -> bool:
    return isinstance(x, Tensor) and x.ndim >= 1


def count_samples(batch: Any, name: str = "batch") -> int:
    """The common length of dim 0 of every tensor in ``batch`` (any nesting of tuples, lists, dicts).

    0-d tensors and non-tensor leaves are carried along unsplit.

    Raises:
        ValueError: if there is no tensor with a batch dimension, the batch is empty, or two tensors
            disagree on dim 0 (the message names the entry).
    """
    leaves, _ = pytree.tree_flatten_with_path(batch)
    n: int | None = None
    first = ""
    for path, leaf in leaves:
        if not _is_sample_tensor(leaf):
            continue
        where = name + pytree.keystr(path)
        if n is None:
            n, first = int(leaf.shape[0]), where
        elif leaf.shape[0] != n:
            raise ValueError(
                f"{where} has {leaf.shape[0]} samples on dim 0 but {first} has {n}; every tensor of a "
                "batch needs the samples on dim 0"
            )
    if n is None:
        raise ValueError(
            f"{name} must be a tensor, or a tuple/list/dict of tensors, with the samples on dim 0; got "
            f"{type(batch).__name__}"
        )
    if n == 0:
        raise ValueError(f"empty batch: {first} has 0 samples on dim 0; a batch needs at least 1")
    return n


def batch_device(batch: Any) -> torch.device:
    for leaf in pytree.tree_leaves(batch):
        if isinstance(leaf, Tensor):
            return leaf.device
    return torch.device("cpu")


def split(batch: Any, start: int, stop: int) -> Any:
    """Samples ``start:stop`` of every tensor with a batch dimension."""
    return pytree.tree_map(lambda t: t[start:stop] if _is_sample_tensor(t) else t, batch)


def fold(batch: Any, k: int) -> tuple[Any, Any]:
    """``[k*m, ...] -> [k, m, ...]`` for every batched tensor, and the matching ``vmap`` in_dims."""
    folded = pytree.tree_map(
        lambda t: t.reshape(k, t.shape[0] // k, *t.shape[1:]) if _is_sample_tensor(t) else t, batch
    )
    return folded, pytree.tree_map(lambda t: 0 if _is_sample_tensor(t) else None, batch)


def to_device(batch: Any, device: torch.device) -> Any:
    return pytree.tree_map(
        lambda t: t.to(device, non_blocking=True) if isinstance(t, Tensor) else t, batch
    )


def call(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping, ``model(*inputs)`` for a tuple or list, else ``model(inputs)``."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def logits_of(outputs: Any) -> Any:
    """The ``logits`` of a Hugging Face-style output (a mapping or an object with ``.logits``)."""
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    logits = getattr(outputs, "logits", None)
    return outputs if logits is None or isinstance(outputs, Tensor) else logits


class TargetsForm:
    """``loss_fn(outputs, targets)`` on a batch ``(inputs, targets)``, as ``fn(model, batch)``."""

    def __init__(self, loss_fn: Callable[..., Tensor]) -> None:
        self.loss_fn = loss_fn

    def __call__(self, model: nn.Module, batch: Any) -> Tensor:
        inputs, targets = batch
        outputs = logits_of(call(model, inputs))
        if isinstance(self.loss_fn, nn.CrossEntropyLoss | nn.NLLLoss):
            check_class_targets(type(self.loss_fn).__name__, outputs, targets)
        return self.loss_fn(outputs, targets)


def check_class_targets(loss: str, outputs: Any, targets: Any) -> None:
    """Shapes and dtypes a classification loss accepts, checked on the host (no synchronisation)."""
    if not isinstance(outputs, Tensor) or not isinstance(targets, Tensor) or outputs.ndim < 2:
        return
    indices = (outputs.shape[0], *outputs.shape[2:])
    if targets.is_floating_point():
        if targets.shape != outputs.shape:
            raise ValueError(
                f"targets: {loss} takes class indices (int64, shape {tuple(indices)}) or class "
                f"probabilities of the outputs' shape {tuple(outputs.shape)}; got {targets.dtype} of shape "
                f"{tuple(targets.shape)}"
            )
    elif targets.dtype not in (torch.int64, torch.uint8):
        raise ValueError(
            f"targets: {loss} takes int64 class indices, got {targets.dtype}; use targets.long()"
        )
    elif targets.shape != indices:
        raise ValueError(
            f"targets: {loss} takes class indices of shape {tuple(indices)}, got {tuple(targets.shape)}"
            + ("; use targets.squeeze(1)" if targets.shape == (*indices, 1) else "")
        )


class PerSampleModule(nn.Module):
    """``forward(batch) = fn(model, batch)``: lets ``torch.func.functional_call`` swap the model's
    parameters (names prefixed ``model.``) inside any per-sample loss."""

    def __init__(self, model: nn.Module, fn: PerSampleLoss) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, batch: Any) -> Tensor:
        return self.fn(self.model, batch)


# ----------------------------------------------------------------------------- weights and state
@dataclass
class Group:
    """Parameters of one (device, dtype), with their preallocated backup buffers."""

    params: list[Tensor]
    backup: list[Tensor] = field(default_factory=list)

    def save(self) -> None:
        if not self.backup:
            self.backup = [torch.empty_like(p) for p in self.params]
        torch._foreach_copy_(self.backup, self.params)

    def restore(self) -> None:
        torch._foreach_copy_(self.params, self.backup)


def weights_changed() -> None:
    """Call after changing weights in place inside a step.

    Autocast caches its low-precision copies of the weights for the whole ``autocast`` region; a step
    run inside one would otherwise compute the pass at w + e with the copies of w.
    """
    torch.clear_autocast_cache()


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: Tensor) -> Tensor:
    t = t.detach()
    if t.is_complex():  # two floats per element; compare their bit patterns
        t = torch.view_as_real(t)
    return t.view(_BITS[t.element_size()])


def bitwise_select_(keep: Tensor, tensors: list[Tensor], others: list[Tensor]) -> None:
    """``tensors[i] <- tensors[i] if keep else others[i]``, bit for bit, a few foreach kernels in all.

    The choice is made by integer arithmetic on the bit patterns, ``t * k + o * (1 - k)``, because
    in floating point a NaN on the rejected side would leak through (``NaN * 0`` is NaN), and torch
    has no multi-tensor ``where``. ``keep`` is a 0-d bool tensor (no host sync) on the tensors' device;
    ``others`` is used as scratch space and holds garbage afterwards.
    """
    by_kind: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
    for t, o in zip(tensors, others):
        tb, ob = _bits(t), _bits(o)
        ts, os_ = by_kind.setdefault((tb.device, tb.dtype), ([], []))
        ts.append(tb)
        os_.append(ob)
    for (device, bits), (ts, os_) in by_kind.items():
        k = keep.to(device=device, dtype=bits)
        torch._foreach_mul_(ts, k)
        torch._foreach_mul_(os_, 1 - k)
        torch._foreach_add_(ts, os_)


class RNGState:
    """The CPU generator's state and that of every CUDA device in ``devices``, to restore exactly."""

    def __init__(self, devices: set[torch.device]) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = {d: torch.cuda.get_rng_state(d) for d in devices if d.type == "cuda"}

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for d, s in self.cuda.items():
            torch.cuda.set_rng_state(s, d)
