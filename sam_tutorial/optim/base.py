"""The engine shared by every optimizer of the SAM family.

One step of any variant is the same sequence, only the gradient that builds the perturbation differs:

.. code-block:: text

    pass 1   forward + backward at w          -> g  (the ascent gradient; variant-specific)
    perturb  w <- w + e,  e = rho * g / ||g||  (SAM)   or   e = rho * g   (USAM, normalize=False)
    pass 2   forward + backward at w + e      -> g' (the descent gradient)
    restore  w <- w (exact copy), model buffers <- their values after pass 1
    step     base optimizer step with g' at w (skipped, bit-exactly, if anything was non-finite)

``rho = 0`` is one plain pass and a base step, so SGD runs through the same code as every variant it
is compared with.

Engineering choices (see ``shared/reference/sam-implementations.md`` for what other libraries get wrong):

* the base optimizer is any :class:`torch.optim.Optimizer` *instance*; ``param_groups`` and ``state``
  are the base optimizer's own objects, so LR schedulers attach to either; ``state_dict`` carries the
  base optimizer's state;
* weights are backed up into preallocated buffers and restored with ``copy_`` (bit-exact), never by
  subtracting e and never by rebinding ``p.data``;
* multi-tensor ``torch._foreach_*`` kernels per (device, dtype) group; norms accumulated in float32;
  scalars such as ``rho / ||g||`` stay 0-d device tensors: no ``.item()``, no host synchronisation;
* BatchNorm running statistics (any module buffer) are updated by the first pass at w only: buffers are
  copied after pass 1 and copied back after every other pass, exactly;
* a non-finite loss or gradient skips the whole step on the device: the base step runs, then parameters,
  optimizer state and model buffers are selected back bit for bit by ``select_`` (integer foreach
  kernels, no per-tensor loop). Until the base optimizer has created its state (its first step), that
  one decision is taken on the host;
* float16 with :class:`torch.amp.GradScaler`: pass ``scaler=``; both backward passes are scaled, an
  overflow in either pass skips the whole step and lowers the scale.

DistributedDataParallel (pass the DDP-wrapped model): ``scope`` says where the perturbation comes from.

* ``scope="local"`` (default): pass 1, forward *and* backward, runs under ``model.no_sync()``, so each
  rank perturbs with its own gradient; DDP's bucketed all-reduce runs once, in pass 2. The step is
  m-SAM with m = the per-rank batch (Foret et al.'s multi-accelerator SAM), one all-reduce per step.
* ``scope="global"``: pass 1 is synchronised too, so the perturbation uses the all-reduced gradient:
  SAM on the global batch, two all-reduces per step.
* A rank whose pass 1 is non-finite makes its descent loss NaN; the all-reduce carries it to every rank
  and all ranks skip the step together, with no extra collective.
* BatchNorm: with DDP's default ``broadcast_buffers=True`` every forward starts from rank 0's buffers,
  and each rank keeps the statistics of its own first pass. ``SyncBatchNorm`` (CUDA only) normalises
  with global statistics in every pass, also under ``no_sync``: the perturbation stays local but the
  normalisation is global.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

Inputs = Tensor | tuple[Tensor, ...]
Targets = Tensor | tuple[Tensor, ...]
LossFn = Callable[..., Tensor]
"""``loss_fn(outputs, targets) -> Tensor[B]``: one loss per sample (e.g. ``reduction="none"``)."""
GradPairs = list[tuple[list[Tensor], list[Tensor]]]
"""Per (device, dtype) group: the parameters and their gradients."""

SCOPES = ("local", "global")
"""Perturbation scopes under DistributedDataParallel."""

EPS = 1e-12
"""Added to ``||g||`` before dividing, as in Foret et al.'s reference code."""


class StepStats(NamedTuple):
    """What one step measured; every field is a tensor on the model's device (no host sync).

    Attributes:
        loss: mean loss over the batch at w (n-SAM: over ``data``).
        loss_perturbed: mean loss at the perturbed point(s) w + e (equals ``loss`` when rho = 0).
        grad_norm: ||g|| of the gradient that built the perturbation (m-SAM: mean over micro-batches).
        perturbation_norm: ||e|| (m-SAM: mean over micro-batches); 0 when rho = 0.
        skipped: True if the step was skipped because a loss or gradient was non-finite.
    """

    loss: Tensor
    loss_perturbed: Tensor
    grad_norm: Tensor
    perturbation_norm: Tensor
    skipped: Tensor


@dataclass
class _Group:
    """Parameters of one (device, dtype), with their preallocated backup buffers."""

    params: list[Tensor]
    backup: list[Tensor] = field(default_factory=list)

    def save(self) -> None:
        if not self.backup:
            self.backup = [torch.empty_like(p) for p in self.params]
        torch._foreach_copy_(self.backup, self.params)

    def restore(self) -> None:
        torch._foreach_copy_(self.params, self.backup)


def as_tuple(x: Inputs) -> tuple[Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def batch_size(inputs: Inputs, targets: Targets) -> int:
    """The common length of dim 0 of every input and target tensor.

    Raises:
        ValueError: if inputs/targets are not tensors (or tuples of tensors) with the same non-zero
            length on dim 0.
    """
    ins, tgts = as_tuple(inputs), as_tuple(targets)
    if not ins or not all(isinstance(t, Tensor) and t.ndim >= 1 for t in ins):
        raise ValueError("inputs must be a tensor (or a tuple of tensors) with the batch on dim 0")
    if not tgts or not all(isinstance(t, Tensor) and t.ndim >= 1 for t in tgts):
        raise ValueError("targets must be a tensor (or a tuple of tensors) with the batch on dim 0")
    n = ins[0].shape[0]
    if n == 0:
        raise ValueError("empty batch: inputs has 0 samples on dim 0; a batch needs at least 1")
    for t in ins[1:]:
        if t.shape[0] != n:
            raise ValueError(f"inputs disagree on the batch size: {n} vs {t.shape[0]}")
    for t in tgts:
        if t.shape[0] != n:
            raise ValueError(f"targets has {t.shape[0]} samples but inputs has {n}; they must match")
    return n


def weights_changed() -> None:
    """Call after changing weights in place inside a step.

    Autocast caches its low-precision copies of the weights for the whole ``autocast`` region; a step
    run inside one would otherwise compute the pass at w + e with the copies of w.
    """
    torch.clear_autocast_cache()


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def select_(keep: Tensor, tensors: list[Tensor], others: list[Tensor]) -> None:
    """``tensors[i] <- tensors[i] if keep else others[i]``, bit for bit, a few foreach kernels in all.

    The choice is made by integer arithmetic on the bit patterns, ``t * k + o * (1 - k)``, because
    in floating point a NaN on the rejected side would leak through (``NaN * 0`` is NaN), and torch
    has no multi-tensor ``where``. ``keep`` is a 0-d bool tensor (no host sync); ``others`` is used
    as scratch space and holds garbage afterwards.
    """
    by_kind: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
    for t, o in zip(tensors, others):
        bits = _BITS[t.element_size()]
        ts, os_ = by_kind.setdefault((t.device, bits), ([], []))
        ts.append(t.detach().view(bits))
        os_.append(o.detach().view(bits))
    for (device, bits), (ts, os_) in by_kind.items():
        k = keep.to(device=device, dtype=bits)
        torch._foreach_mul_(ts, k)
        torch._foreach_mul_(os_, 1 - k)
        torch._foreach_add_(ts, os_)


def check_rho(rho: float) -> float:
    if isinstance(rho, bool) or not isinstance(rho, int | float) or not math.isfinite(rho) or rho < 0:
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
    return float(rho)


class PerturbedOptimizer(torch.optim.Optimizer):
    """Base class of SAM, NSAM, MSAM and RWSAM: owns the passes, the buffers and the base step.

    Subclasses implement ``_perturbed_step``. Public surface: ``step``, ``zero_grad``,
    ``state_dict``, ``load_state_dict``, ``param_groups`` (the base optimizer's list).

    Args:
        model: the module whose forward computes the outputs (its buffers are restored after extra
            passes).
        base: any optimizer over (some of) ``model``'s parameters; it takes the step.
        rho: perturbation radius (``rho = 0``: the base optimizer alone, one pass).
        normalize: ``True`` for SAM's e = rho g/||g||, ``False`` for USAM's e = rho g.
        scaler: optional :class:`torch.amp.GradScaler` for float16 training.
        skip_nonfinite: skip the whole step when a loss or gradient is non-finite (default). With
            ``False`` the base optimizer steps on whatever the gradients hold (a little faster).
        scope: for a ``DistributedDataParallel`` model, where the perturbation comes from:
            ``"local"`` (default) or ``"global"`` (see the module docstring). Ignored otherwise.
    """

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        rho: float,
        normalize: bool = True,
        scaler: torch.amp.GradScaler | None = None,
        skip_nonfinite: bool = True,
        scope: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(base, torch.optim.Optimizer) or isinstance(base, PerturbedOptimizer):
            raise ValueError(
                "base must be a torch.optim.Optimizer instance (e.g. torch.optim.SGD(...)), "
                f"not a class or another SAM-family optimizer; got {base!r}"
            )
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)} (or None); got {scope!r}")
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise ValueError(f"scaler must be a torch.amp.GradScaler or None, got {scaler!r}")
        params = [p for g in base.param_groups for p in g["params"]]
        super().__init__(params, dict(base.defaults))
        # Share the base optimizer's objects: schedulers, hooks and users see one set of groups.
        self.param_groups = base.param_groups
        self.state = base.state
        self.defaults = base.defaults
        self.model = model
        self.base = base
        self.rho = check_rho(rho)
        self.normalize = bool(normalize)
        self.scaler = scaler
        self.skip_nonfinite = bool(skip_nonfinite)
        self.ddp = isinstance(model, DistributedDataParallel)
        self.scope = (scope or "local") if self.ddp else None
        self._groups: list[_Group] = []
        self._groups_key: tuple[int, ...] = ()
        self._buffers: list[Tensor] = []
        self._buf_after_pass1: list[Tensor] = []
        self._buf_before_step: list[Tensor] = []
        self._state_backup: list[Tensor] = []

    # ----------------------------------------------------------------- public API
    def step(  # type: ignore[override]
        self,
        inputs: Inputs | Callable[[], Tensor] | None = None,
        targets: Targets | None = None,
        loss_fn: LossFn | None = None,
    ) -> StepStats | Tensor | None:
        """Run every pass of one step and the base optimizer's step.

        Args:
            inputs: a tensor or tuple of tensors, batch on dim 0 (``model(*inputs)``).
            targets: the targets, batch on dim 0.
            loss_fn: ``loss_fn(outputs, targets)`` returning one loss per sample, shape ``[B]``.

        Returns:
            A :class:`StepStats` of device tensors.

        Raises:
            ValueError: on an empty batch, targets of another length, or a loss of the wrong shape;
                nothing (weights, buffers, gradients, optimizer state) is changed then.
        """
        if callable(inputs) and targets is None and loss_fn is None:
            return self._closure_step(inputs)
        if inputs is None or targets is None or loss_fn is None:
            raise ValueError(
                f"{type(self).__name__}.step needs (inputs, targets, loss_fn)"
                + ("; or a closure (SAM only)" if self._supports_closure else "")
            )
        n = batch_size(inputs, targets)  # type: ignore[arg-type]
        self._check_batch(n)
        self._save_buffers(before_step=True)
        if self.rho == 0.0:
            return self._plain_step(inputs, targets, loss_fn, n)  # type: ignore[arg-type]
        return self._perturbed_step(inputs, targets, loss_fn, n)  # type: ignore[arg-type]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base"):  # called by torch.optim.Optimizer.__init__
            return super().add_param_group(param_group)
        self.base.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """``{"base": base.state_dict(), "sam": {...}}``; the ``sam`` part holds RNG states, if any."""
        return {"base": self.base.state_dict(), "sam": self._extra_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a dict from ``state_dict``, or a plain base-optimizer state dict."""
        if "base" in state_dict and "sam" in state_dict:
            self.base.load_state_dict(state_dict["base"])
            self._load_extra_state(state_dict["sam"])
        elif "state" in state_dict and "param_groups" in state_dict:
            self.base.load_state_dict(state_dict)
        else:
            raise ValueError(
                "state_dict must come from SAM-family state_dict() (keys 'base', 'sam') or from a "
                f"torch optimizer (keys 'state', 'param_groups'); got keys {sorted(state_dict)}"
            )
        # torch's load_state_dict replaces the base optimizer's group list and state: share them again,
        # or a scheduler attached to this object would set the LR on a list nobody reads.
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        self._groups_key = ()
        self._state_backup = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rho={self.rho}, normalize={self.normalize}, base={self.base!r})"

    # ------------------------------------------------------ for subclasses to override
    _supports_closure = False

    def _check_batch(self, n: int) -> None:
        """Reject a batch size the variant cannot use (m-SAM: m must divide it)."""

    def _perturbed_step(
        self, inputs: Inputs, targets: Targets, loss_fn: LossFn, n: int
    ) -> StepStats:
        raise NotImplementedError

    def _closure_step(self, closure: Callable[[], Tensor]) -> Tensor:
        raise ValueError(
            f"{type(self).__name__} needs the batch: call step(inputs, targets, loss_fn); "
            "only SAM accepts a closure"
        )

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # ----------------------------------------------------------------- passes
    def forward_losses(self, inputs: Inputs, targets: Targets, loss_fn: LossFn, n: int) -> Tensor:
        """Per-sample losses ``loss_fn(model(*inputs), targets)``, checked to have shape ``[n]``.

        A wrong shape restores the buffers saved at the start of the step and raises ``ValueError``.
        """
        losses = loss_fn(self.model(*as_tuple(inputs)), targets)
        if not isinstance(losses, Tensor) or losses.shape != (n,):
            self._restore_buffers(before_step=True)
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"loss_fn must return one loss per sample, shape ({n},), got {shape}; "
                "use reduction='none'"
            )
        return losses

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def ascent_context(self) -> AbstractContextManager[Any]:
        """Wraps pass 1 (forward *and* backward): ``no_sync`` under DDP with ``scope="local"``."""
        return self.no_sync() if self.scope == "local" else nullcontext()

    def no_sync(self) -> AbstractContextManager[Any]:
        """``model.no_sync()`` for a DDP model (no gradient all-reduce), a no-op otherwise."""
        return self.model.no_sync() if self.ddp else nullcontext()

    def poison_unless(self, loss: Tensor, ok: Tensor) -> Tensor:
        """Under DDP, make the synchronised descent loss NaN where this rank's pass 1 was not finite.

        The all-reduce then carries the NaN to every rank, so all ranks skip the step together without
        an extra collective.
        """
        if not self.ddp:
            return loss
        return loss * torch.where(ok, 1.0, float("nan")).to(loss.dtype)

    def _plain_step(self, inputs: Inputs, targets: Targets, loss_fn: LossFn, n: int) -> StepStats:
        loss = self.forward_losses(inputs, targets, loss_fn, n).mean()
        self.zero_grad()  # only once the call is known to be valid: a rejected call changes nothing
        self.backward(loss)
        gnorm = self.grad_norm()
        ok = torch.isfinite(loss) & torch.isfinite(gnorm)
        self.save_weights()
        skipped = self.base_step(ok)
        zero = torch.zeros((), device=gnorm.device)
        return StepStats(loss.detach(), loss.detach(), self.unscaled(gnorm), zero, skipped)

    # ----------------------------------------------------------------- weights
    def groups(self) -> list[_Group]:
        """Trainable parameters grouped by (device, dtype); rebuilt when the groups change."""
        key = tuple(len(g["params"]) for g in self.param_groups)
        if key != self._groups_key:
            by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
            for g in self.param_groups:
                for p in g["params"]:
                    if p.requires_grad:
                        by_kind.setdefault((p.device, p.dtype), []).append(p)
            self._groups = [_Group(ps) for ps in by_kind.values()]
            self._groups_key = key
        return self._groups

    def save_weights(self) -> None:
        with torch.no_grad():
            for g in self.groups():
                g.save()

    def restore_weights(self) -> None:
        with torch.no_grad():
            for g in self.groups():
                g.restore()
        weights_changed()

    def grads(self) -> GradPairs:
        """Per group, the parameters that have a ``.grad`` and their gradients."""
        out: GradPairs = []
        for g in self.groups():
            ps = [p for p in g.params if p.grad is not None]
            if ps:
                out.append((ps, [p.grad for p in ps]))  # type: ignore[misc]
        return out

    def pair_up(self, grads: tuple[Tensor | None, ...]) -> GradPairs:
        """Group gradients given in ``flat_params`` order (e.g. from ``torch.autograd.grad``)."""
        out: GradPairs = []
        i = 0
        for g in self.groups():
            chunk = grads[i : i + len(g.params)]
            i += len(g.params)
            kept = [(p, d) for p, d in zip(g.params, chunk) if d is not None]
            if kept:
                out.append(([p for p, _ in kept], [d for _, d in kept]))  # type: ignore[misc]
        return out

    def flat_params(self) -> list[Tensor]:
        """The trainable parameters, group after group."""
        return [p for g in self.groups() for p in g.params]

    def grad_norm(
        self, adaptive_eps: float | None = None, pairs: GradPairs | None = None
    ) -> Tensor:
        """Global L2 norm ||g|| of the gradients, accumulated in float32 (float64 for float64).

        Args:
            adaptive_eps: if given (ASAM), the norm of T g with T = abs(w) + adaptive_eps.
            pairs: (params, grads) per group; default: the ``.grad`` of every parameter.
        """
        norms: list[Tensor] = []
        device = None
        for ps, gs in self.grads() if pairs is None else pairs:
            device = device or gs[0].device
            if adaptive_eps is not None:
                gs = torch._foreach_mul(torch._foreach_add(torch._foreach_abs(ps), adaptive_eps), gs)
            acc = torch.promote_types(gs[0].dtype, torch.float32)  # float32 at least, float64 kept
            norms.extend(n.to(device) for n in torch._foreach_norm(gs, 2, dtype=acc))
        if not norms:
            raise RuntimeError("no parameter received a gradient; does the loss depend on them?")
        return torch.linalg.vector_norm(torch.stack(norms))

    def perturb(
        self, scale: Tensor, adaptive_eps: float | None = None, pairs: GradPairs | None = None
    ) -> None:
        """w <- w + scale * g (ASAM: w <- w + scale * T^2 g with T = abs(w) + adaptive_eps).

        The gradients are scaled in place (they are overwritten by the next pass anyway).
        """
        with torch.no_grad():
            for ps, gs in self.grads() if pairs is None else pairs:
                if adaptive_eps is not None:
                    t = torch._foreach_add(torch._foreach_abs(ps), adaptive_eps)
                    torch._foreach_mul_(gs, t)
                    torch._foreach_mul_(gs, t)
                torch._foreach_mul_(gs, scale.to(gs[0].device))
                torch._foreach_add_(ps, gs)
        weights_changed()

    def finish(self, ok: Tensor) -> Tensor:
        """After the descent backward at w + e: restore w and the buffers, then the guarded base step.

        ``ok`` says whether the losses and the ascent gradient were finite; the descent gradient is
        checked here. Returns ``skipped``.
        """
        self.restore_weights()
        self.restore_buffers()
        return self.base_step(ok & torch.isfinite(self.grad_norm()))

    def perturbation_scale(self, gnorm: Tensor) -> Tensor:
        """rho/||g|| (SAM) or rho (USAM), as a 0-d float32 device tensor; unscales AMP gradients."""
        if self.normalize:
            return self.rho / (gnorm + EPS)
        scale = torch.full_like(gnorm, self.rho)
        if self.scaler is not None:
            scale = scale / self.scaler._get_scale_async().float()
        return scale

    def unscaled(self, gnorm: Tensor) -> Tensor:
        """A norm of AMP-scaled gradients, divided by the scale (unchanged without a scaler)."""
        if self.scaler is None:
            return gnorm
        return gnorm / self.scaler._get_scale_async().float()

    # ----------------------------------------------------------------- buffers
    def _model_buffers(self) -> list[Tensor]:
        bufs = [b for b in self.model.buffers()]
        if len(bufs) != len(self._buffers) or any(a is not b for a, b in zip(bufs, self._buffers)):
            self._buffers = bufs
            self._buf_after_pass1 = [torch.empty_like(b) for b in bufs]
            self._buf_before_step = [torch.empty_like(b) for b in bufs]
        return self._buffers

    def _save_buffers(self, before_step: bool = False) -> None:
        bufs = self._model_buffers()
        if bufs:
            dst = self._buf_before_step if before_step else self._buf_after_pass1
            with torch.no_grad():
                torch._foreach_copy_(dst, bufs)

    def _restore_buffers(self, before_step: bool = False) -> None:
        if self._buffers:
            src = self._buf_before_step if before_step else self._buf_after_pass1
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, src)

    def save_buffers(self) -> None:
        """Remember the model's buffers as pass 1 left them (BatchNorm running statistics)."""
        self._save_buffers()

    def restore_buffers(self) -> None:
        """Put back the buffers saved by ``save_buffers`` (undo any later pass's updates)."""
        self._restore_buffers()

    # ----------------------------------------------------------------- the base step
    def _base_state_tensors(self) -> list[Tensor] | None:
        """Tensors of the base optimizer's state for parameters with a gradient; ``None`` while a
        parameter that will be stepped has no state yet (before the base optimizer's first step)."""
        out: list[Tensor] = []
        for ps, _ in self.grads():
            for p in ps:
                st = self.base.state.get(p)
                if not st:
                    return None
                out.extend(v for v in st.values() if isinstance(v, Tensor))
        return out

    def base_step(self, ok: Tensor) -> Tensor:
        """The base optimizer's step, taken only if ``ok``; returns ``skipped`` as a device tensor.

        A skipped step changes nothing: parameters, the base optimizer's state and the model's buffers
        (e.g. BatchNorm statistics that a non-finite forward would poison) are as before the step.
        Expects the weights backup to hold the current weights (call ``save_weights`` first).
        """
        try:
            if self.scaler is not None:
                skipped = self._scaled_base_step(ok)
            elif not self.skip_nonfinite:
                self.base.step()
                return ~ok
            else:
                skipped = self._guarded_base_step(ok)
            if self._buffers:
                with torch.no_grad():
                    select_(~skipped, self._buffers, self._buf_before_step)
            return skipped
        finally:
            weights_changed()

    def _guarded_base_step(self, ok: Tensor) -> Tensor:
        state = self._base_state_tensors()
        if state is None:
            if bool(ok):  # host decision, only until the base optimizer has created its state
                self.base.step()
            return ~ok
        with torch.no_grad():
            if len(self._state_backup) != len(state) or any(
                a.shape != b.shape or a.dtype != b.dtype or a.device != b.device
                for a, b in zip(self._state_backup, state)
            ):
                self._state_backup = [torch.empty_like(t) for t in state]
            if state:
                torch._foreach_copy_(self._state_backup, state)
            self.base.step()
            params = [p for g in self.groups() for p in g.params]
            backups = [b for g in self.groups() for b in g.backup]
            select_(ok, params + state, backups + self._state_backup)
        return ~ok

    def _scaled_base_step(self, ok: Tensor) -> Tensor:
        assert self.scaler is not None
        self.scaler.unscale_(self.base)  # records the overflows of pass 2, per device
        per_device = self.scaler._per_optimizer_states[id(self.base)]["found_inf_per_device"]
        for found in per_device.values():  # an overflow in pass 1 must skip the step and lower the scale too
            found.add_((~ok).to(found))
        skipped = torch.stack([v.to(ok.device) for v in per_device.values()]).sum() > 0 if per_device else ~ok
        self.scaler.step(self.base)  # skips the base step if any overflow was recorded
        self.scaler.update()
        return skipped
