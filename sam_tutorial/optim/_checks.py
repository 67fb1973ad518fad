"""Checks of what users hand the SAM family (private): model and base, batches (checkpoints: ``_state``),
and the type of every keyword argument of a constructor (:func:`typed_init`, from its annotations).

Each raises ``ValueError`` (or ``RuntimeError`` for the grad mode) naming the argument and what was
expected, before anything is changed.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sam_tutorial.optim._util import PerSampleLoss, TargetsForm, count_samples

__all__: list[str] = []  # private module


def check_model_and_base(model: Any, base: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(base, torch.optim.Optimizer) or hasattr(base, "_perturbed_step"):
        raise ValueError(
            "base must be a torch.optim.Optimizer instance (e.g. torch.optim.SGD(...)), "
            f"not a class or another SAM-family optimizer; got {base!r}"
        )
    if isinstance(base, torch.optim.LBFGS):
        raise ValueError(
            "base=LBFGS is not supported: its step re-evaluates a closure for a line search, which a "
            "perturbed step cannot give it; use a first-order optimizer (SGD, Adam, ...)"
        )
    own = {id(p) for p in model.parameters()}
    foreign = sum(id(p) not in own for g in base.param_groups for p in g["params"])
    if foreign:
        raise ValueError(
            f"base optimizes {foreign} parameter(s) that are not the model's: build it from "
            "model.parameters() of the same model"
        )
    if not any(p.requires_grad for g in base.param_groups for p in g["params"]):
        raise ValueError("no parameter of the base optimizer requires grad: there is nothing to train")


def check_grad_mode() -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "step() was called inside torch.inference_mode(): a training step needs autograd; call it "
            "outside (torch.no_grad() is fine, the step enables gradients itself)"
        )


def task(
    owner: str, closure_ok: bool, inputs: Any, targets: Any, loss_fn: Any
) -> tuple[Any, PerSampleLoss]:
    """The batch and ``fn(model, batch) -> per-sample losses`` for either form of ``step``."""
    if loss_fn is None and callable(targets) and not isinstance(targets, Tensor):
        loss_fn, targets = targets, None
    if inputs is None:
        raise ValueError(
            f"{owner}.step() needs the batch: step(inputs, targets, loss_fn) or "
            "step(batch, loss_fn) with loss_fn(model, batch) -> per-sample losses"
            + ("; or a closure" if closure_ok else "")
            + ". GradScaler.step(opt) and Trainer-style opt.step() cannot drive it: pass scaler= "
            "to the constructor and call opt.step(...) with the batch."
        )
    if loss_fn is None:
        raise ValueError(f"{owner}.step: loss_fn is missing (one loss per sample)")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if targets is None:
        if isinstance(loss_fn, nn.modules.loss._Loss):
            raise ValueError(
                f"loss_fn {type(loss_fn).__name__} takes (outputs, targets): call "
                "step(inputs, targets, loss_fn), or give a loss_fn(model, batch)"
            )
        return inputs, loss_fn
    batch_size, nt = count_samples(inputs, "inputs"), count_samples(targets, "targets")
    if batch_size != nt:
        raise ValueError(f"targets has {nt} samples but inputs has {batch_size}; they must match")
    return (inputs, targets), TargetsForm(loss_fn)


# ----------------------------------------------------------------------------- typed keyword arguments
_UNCHECKED = frozenset({"self", "model", "base", "data"})
"""Arguments with checks of their own (``check_model_and_base``, the batch checks)."""


def _is_bool(value: Any) -> bool:
    kind = type(value)
    return isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"))


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether ``value`` has the type ``hint`` names; ``None`` when the hint is not one this checks."""
    if hint is Any:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(h, value) for h in typing.get_args(hint)]
        return None if None in verdicts else any(verdicts)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return _is_bool(value)
    if hint is int:
        return isinstance(value, numbers.Integral) and not _is_bool(value)
    if hint is float:
        return isinstance(value, numbers.Real) and not _is_bool(value)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and origin is None:
        return isinstance(value, hint)
    return None


def _describe(hint: Any) -> str:
    names = {bool: "True or False", int: "an integer", float: "a number", str: "a string",
             type(None): "None"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if isinstance(hint, type) and hint not in names:
        public = {"torch.amp.grad_scaler": "torch.amp"}.get(hint.__module__, hint.__module__)
        return f"a {public}.{hint.__qualname__}"
    return names.get(hint, str(hint))


def check_typed(owner: str, name: str, value: Any, hint: Any) -> None:
    """Refuse ``value`` for the argument ``name`` of ``owner`` unless it has the annotated type ``hint``.

    The one check of option *types* in the family (ranges and choices are checked where the value is
    stored): a bool must be a bool, so ``normalize="False"`` -- true in Python -- is refused rather than
    silently read as true; an int must be an integer, not a float or a bool; and so on.
    """
    if _accepts(hint, value) is False:
        extra = " (a string is not read as a bool: write the bare False/True)" if (
            hint is bool and isinstance(value, str)) else ""
        raise ValueError(f"{owner}: {name} must be {_describe(hint)}, got {value!r} of type "
                         f"{type(value).__name__}{extra}")


@functools.cache
def argument_types(fn: Callable[..., Any]) -> Mapping[str, Any]:
    """The annotated types of ``fn``'s arguments (strings resolved in ``fn``'s module); a subclass whose
    annotations cannot be resolved here (names imported under ``TYPE_CHECKING``) keeps only the
    annotations that can."""
    try:
        return inspect.get_annotations(fn, eval_str=True)
    except Exception:  # noqa: BLE001 - an unresolvable annotation must not break a user's subclass
        resolved: dict[str, Any] = {}
        for name, hint in inspect.get_annotations(fn).items():
            try:
                resolved[name] = eval(hint, fn.__globals__) if isinstance(hint, str) else hint  # noqa: S307
            except Exception:  # noqa: BLE001
                continue
        return resolved


def check_arguments(owner: str, fn: Callable[..., Any], arguments: Mapping[str, Any]) -> None:
    """:func:`check_typed` for every named argument of ``fn`` in ``arguments`` (others: unknown name)."""
    hints = argument_types(fn)
    params = inspect.signature(fn).parameters
    for name, value in arguments.items():
        if name not in params:
            raise ValueError(f"{owner} has no argument {name!r}; it takes: "
                             f"{', '.join(p for p in params if p not in _UNCHECKED)}")
        if name not in _UNCHECKED and name in hints:
            check_typed(owner, name, value, hints[name])


def typed_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a constructor so that its arguments are checked against its annotations first."""
    if getattr(init, "_typed", False):
        return init
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as err:
            raise TypeError(f"{type(self).__name__}(): {err}") from None
        values = {k: v for k, v in bound.arguments.items()
                  if signature.parameters[k].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                           inspect.Parameter.VAR_KEYWORD)}
        check_arguments(type(self).__name__, init, {k: v for k, v in values.items() if k != "self"})
        init(self, *args, **kwargs)

    wrapper._typed = True  # type: ignore[attr-defined]
    return wrapper
