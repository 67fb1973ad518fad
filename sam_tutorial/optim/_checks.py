"""Checks of what users hand the SAM family (private): model and base, batches, checkpoints.

Each raises ``ValueError`` (or ``RuntimeError`` for the grad mode) naming the argument and what was
expected, before anything is changed.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def check_base_state(base: torch.optim.Optimizer, sd: Mapping[str, Any]) -> None:
    """Refuse a base checkpoint of another kind of optimizer or of another architecture."""
    groups, state = sd.get("param_groups"), sd.get("state")
    if not isinstance(groups, list) or not isinstance(state, Mapping):
        raise ValueError("state_dict['param_groups'] must be a list and state_dict['state'] a dict")
    if len(groups) != len(base.param_groups):
        raise ValueError(
            f"the checkpoint has {len(groups)} parameter groups, this optimizer "
            f"{len(base.param_groups)}"
        )
    ids: dict[Any, Tensor] = {}
    for i, (saved, cur) in enumerate(zip(groups, base.param_groups)):
        if not isinstance(saved, Mapping) or len(saved.get("params", ())) != len(cur["params"]):
            raise ValueError(f"parameter group {i} of the checkpoint has another number of parameters")
        unknown = sorted(set(saved) - set(cur))
        if unknown:
            raise ValueError(
                f"the checkpoint's parameter groups have settings {unknown} that this "
                f"{type(base).__name__} does not have: it was saved by another kind of base "
                "optimizer"
            )
        ids.update(zip(saved["params"], cur["params"]))
    for pid, st in state.items():
        p = ids.get(pid)
        if p is None or not isinstance(st, Mapping):
            raise ValueError(f"the checkpoint has state for a parameter id {pid!r} it does not list")
        for key, v in st.items():
            if isinstance(v, Tensor) and v.ndim > 0 and v.shape != p.shape and (
                v.ndim == p.ndim or v.numel() == p.numel()
            ):
                raise ValueError(
                    f"state {key!r} of a parameter has shape {tuple(v.shape)} but the parameter has "
                    f"{tuple(p.shape)}: the checkpoint is of another architecture"
                )
