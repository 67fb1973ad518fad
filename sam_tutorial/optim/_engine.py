"""The mechanics under every step of the SAM family (private): weight backups, gradient groups, norms,
the perturbation and model buffers; the guarded base step is :mod:`sam_tutorial.optim._skip`'s.
:class:`PerturbedOptimizer` inherits them."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sam_tutorial.optim._skip import GuardedStep
from sam_tutorial.optim._util import EPS, Group, weights_changed

__all__: list[str] = []  # private module

GradPairs = list[tuple[list[Tensor], list[Tensor]]]
"""Per (device, dtype) group: the parameters and their gradients."""


class Engine(GuardedStep):
    """Weights, gradients, buffers and the guarded base step; state lives on the optimizer object."""

    param_groups: list[dict[str, Any]]
    base: torch.optim.Optimizer
    model: nn.Module
    rho: float
    normalize: bool
    ddp: bool
    skip_nonfinite: bool
    max_grad_norm: float | None
    _scaler: torch.amp.GradScaler | None
    _groups: list[Group]
    _groups_key: tuple[Any, ...]
    _buffers: list[Tensor]
    _buf_after_pass1: list[Tensor]
    _buf_before_step: list[Tensor]
    _state_backup: list[Tensor]
    _stateless_ids: set[int]
    _scale: Tensor | None
    _base_done: bool
    _host_skip: bool
    _shared: Any
    _capturable_groups: set[int]

    # ----------------------------------------------------------------- weights
    def _refresh_groups(self) -> list[Group]:
        """Trainable parameters grouped by (device, dtype); rebuilt when a parameter is added or its
        ``requires_grad`` changes (layers unfrozen during fine-tuning are followed)."""
        key = tuple((id(p), p.requires_grad) for g in self.param_groups for p in g["params"])
        if key != self._groups_key:
            by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
            for g in self.param_groups:
                for p in g["params"]:
                    if p.requires_grad:
                        by_kind.setdefault((p.device, p.dtype), []).append(p)
            if not by_kind:
                raise ValueError(
                    "no parameter of the base optimizer requires grad: there is nothing to train "
                    "(unfreeze some, or give the base optimizer the trainable parameters)"
                )
            self._groups = [Group(ps) for ps in by_kind.values()]
            self._groups_key = key
            self._make_capturable()
        return self._groups

    def _make_capturable(self) -> None:
        """On CUDA, keep step counters on the device (``capturable=True``) so a skip needs no sync."""
        for g in self.param_groups:
            if g.get("capturable") is False and any(p.device.type == "cuda" for p in g["params"]):
                g["capturable"] = True
                self._capturable_groups.add(id(g))
                for p in g["params"]:
                    for k, v in self.base.state.get(p, {}).items():
                        if isinstance(v, Tensor) and v.device != p.device:
                            self.base.state[p][k] = v.to(p.device)

    def _save_weights(self) -> None:
        with torch.no_grad():
            for g in self._groups:
                g.save()

    def _restore_weights(self) -> None:
        with torch.no_grad():
            for g in self._groups:
                g.restore()
        self._shared.perturbed = False
        weights_changed()

    def _grads(self) -> GradPairs:
        """Per group, the parameters that have a ``.grad`` and their gradients."""
        out: GradPairs = []
        for g in self._groups:
            pairs = [(p, p.grad) for p in g.params if p.grad is not None]
            if pairs:
                out.append(([p for p, _ in pairs], [d for _, d in pairs if d is not None]))
        return out

    def _clear_grads(self) -> None:
        """``.grad = None`` on the base optimizer's parameters between a step's passes. Not the public
        ``zero_grad``: that also records the gradients for the accumulation check (a Python pass over
        every parameter), which the step does once, when it ends."""
        self.base.zero_grad(set_to_none=True)

    def _group_grads(self, grads: tuple[Tensor | None, ...]) -> GradPairs:
        """Group gradients given in ``_flat_params()`` order (e.g. from ``torch.autograd.grad``)."""
        out: GradPairs = []
        i = 0
        for g in self._groups:
            chunk = grads[i : i + len(g.params)]
            i += len(g.params)
            ps = [p for p, d in zip(g.params, chunk) if d is not None]
            ds = [d for d in chunk if d is not None]
            if ps:
                out.append((ps, ds))
        return out

    def _flat_params(self) -> list[Tensor]:
        """The trainable parameters, group after group."""
        return [p for g in self._groups for p in g.params]

    def _grad_norm(self, adaptive_eps: float | None = None, pairs: GradPairs | None = None) -> Tensor:
        """Global L2 norm ||g|| of the gradients, accumulated in float32 (float64 for float64).

        Args:
            adaptive_eps: if given (ASAM), the norm of T g with T = abs(w) + adaptive_eps.
            pairs: (params, grads) per group; default: the ``.grad`` of every parameter.
        """
        norms: list[Tensor] = []
        device = None
        for ps, gs in self._grads() if pairs is None else pairs:
            device = device or gs[0].device
            if adaptive_eps is not None:
                gs = list(torch._foreach_mul(torch._foreach_add(torch._foreach_abs(ps), adaptive_eps), gs))
            gs = [torch.view_as_real(g) if g.is_complex() else g for g in gs]  # |z|² = re² + im²
            acc = torch.promote_types(gs[0].dtype, torch.float32)
            norms.extend(n.to(device) for n in torch._foreach_norm(gs, 2, dtype=acc))
        if not norms:
            raise ValueError("no parameter received a gradient; does the loss depend on the parameters?")
        return torch.linalg.vector_norm(torch.stack(norms))

    def _perturb(self, scale: Tensor, adaptive_eps: float | None = None,
                 pairs: GradPairs | None = None) -> None:
        """w <- w + scale * g (ASAM: w <- w + scale * T^2 g with T = abs(w) + adaptive_eps).

        The gradients are scaled in place: afterwards they hold e.
        """
        with torch.no_grad():
            for ps, gs in self._grads() if pairs is None else pairs:
                if adaptive_eps is not None:
                    t = torch._foreach_add(torch._foreach_abs(ps), adaptive_eps)
                    torch._foreach_mul_(gs, t)
                    torch._foreach_mul_(gs, t)
                torch._foreach_mul_(gs, scale.to(gs[0].device))
                torch._foreach_add_(ps, gs)
        self._shared.perturbed = True
        weights_changed()

    def _ascend(self, adaptive_eps: float | None = None,
                pairs: GradPairs | None = None) -> tuple[Tensor, Tensor]:
        """w <- w + e from the pass-1 gradients (``pairs``, default ``.grad``); returns (||g||, ||e||)."""
        gnorm = self._grad_norm(adaptive_eps, pairs)
        scale = self._perturbation_scale(gnorm)
        self._perturb(scale, adaptive_eps, pairs)
        # ASAM's ||e|| = rho ||T^2 g|| / ||T g|| is not rho: measure it (the gradients now hold e)
        return gnorm, self._grad_norm(pairs=pairs) if adaptive_eps is not None else scale * gnorm

    def _ascent_grads(self, loss: Tensor) -> GradPairs:
        """Pass 1's gradient of the trainable parameters, kept out of ``.grad``: only the descent pass
        reaches ``.grad``, so parameters outside the base optimizer end every variant's step with the
        same gradient (that of the descent loss at w + e). Under DDP a backward (its all-reduce hooks
        need one); the gradients are then in ``.grad``."""
        scaled = self._scaler.scale(loss) if self._scaler is not None else loss
        if self.ddp:
            scaled.backward()
            return self._grads()
        return self._group_grads(torch.autograd.grad(scaled, self._flat_params(), allow_unused=True))

    def _perturbation_scale(self, gnorm: Tensor) -> Tensor:
        """rho/||g|| (SAM) or rho (USAM), as a 0-d float32 device tensor; unscales AMP gradients."""
        if self.normalize:
            return self.rho / (gnorm + EPS)
        scale = torch.full_like(gnorm, self.rho)
        return scale / self._scale.to(scale) if self._scale is not None else scale

    def _unscaled(self, gnorm: Tensor) -> Tensor:
        """A norm of AMP-scaled gradients, divided by this step's scale (unchanged without a scaler)."""
        return gnorm / self._scale.to(gnorm) if self._scale is not None else gnorm

    def _restore_and_step(self, finite: Tensor) -> Tensor:
        """After the descent backward at w + e: restore w and the buffers after pass 1, then the guarded
        base step. ``finite`` says whether the losses and the ascent gradient were finite; the descent
        gradient is checked here. Returns ``skipped``."""
        self._restore_weights()
        self._restore_buffers()
        return self._checked_base_step(finite)

    def _checked_base_step(self, finite: Tensor) -> Tensor:
        """The guarded base step once the descent gradient is in ``.grad`` (weights at w): its norm is
        checked here, unless a GradScaler checks it anyway. Returns ``skipped``."""
        if self._scaler is not None:
            return self._base_step(finite)
        gnorm = self._grad_norm()
        return self._base_step(finite & torch.isfinite(gnorm), gnorm)

    # ----------------------------------------------------------------- buffers
    def _model_buffers(self) -> list[Tensor]:
        bufs = list(self.model.buffers())
        if len(bufs) != len(self._buffers) or any(a is not b for a, b in zip(bufs, self._buffers)):
            self._buffers = bufs
            self._buf_after_pass1 = [b.clone() for b in bufs]
            self._buf_before_step = [b.clone() for b in bufs]
        return self._buffers

    def _save_buffers(self, before_step: bool = False) -> None:
        """Remember the model's buffers: as pass 1 left them, or (``before_step``) as the step found them."""
        bufs = self._model_buffers()
        if bufs:
            with torch.no_grad():
                torch._foreach_copy_(self._buf_before_step if before_step else self._buf_after_pass1, bufs)

    def _restore_buffers(self, before_step: bool = False) -> None:
        """Put back the buffers saved by ``_save_buffers`` (undo any later pass's updates)."""
        if self._buffers:
            with torch.no_grad():
                torch._foreach_copy_(
                    self._buffers, self._buf_before_step if before_step else self._buf_after_pass1
                )
