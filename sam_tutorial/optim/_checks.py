"""Checks of what users hand the SAM family (private): model and base, batches (checkpoints: ``_state``).

Each raises ``ValueError`` (or ``RuntimeError`` for the grad mode) naming the argument and what was
expected, before anything is changed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sam_tutorial.optim._util import PerSampleLoss, TargetsForm, batch_size

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
    n, nt = batch_size(inputs, "inputs"), batch_size(targets, "targets")
    if n != nt:
        raise ValueError(f"targets has {nt} samples but inputs has {n}; they must match")
    return (inputs, targets), TargetsForm(loss_fn)
