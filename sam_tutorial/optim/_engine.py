"""The mechanics under every step of the SAM family (private): weight backups, gradient groups, norms,
the perturbation, model buffers and the guarded base step. :class:`PerturbedOptimizer` inherits them."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sam_tutorial.optim._util import EPS, Group, bitwise_select_, weights_changed

__all__: list[str] = []  # private module

GradPairs = list[tuple[list[Tensor], list[Tensor]]]
"""Per (device, dtype) group: the parameters and their gradients."""


class Engine:
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

    # ----------------------------------------------------------------- the base step
    def _base_step(self, finite: Tensor, gnorm: Tensor | None = None) -> Tensor:
        """The base optimizer's step, taken only if ``finite``; returns ``skipped`` as a device tensor.
        ``gnorm``: the norm of the unscaled descent gradient if already computed (clipping reuses it).

        A skipped step changes nothing: parameters, the base optimizer's state and the model's buffers
        are as before the step. Expects the weights backup to hold the current weights.
        """
        try:
            if self._scaler is not None:
                skipped = self._scaled_base_step(finite)
            elif not self.skip_nonfinite:
                self._clip(gnorm)
                self.base.step()
                self._base_done = True
                return ~finite
            else:
                skipped = self._guarded_base_step(finite, gnorm)
            if self._buffers:
                with torch.no_grad():
                    bitwise_select_(~skipped, self._buffers, self._buf_before_step)
            return skipped
        finally:
            weights_changed()

    def _clip(self, gnorm: Tensor | None = None) -> None:
        """``clip_grad_norm_`` to ``max_grad_norm``, reusing ``gnorm`` (the gradients' norm) if given."""
        if self.max_grad_norm is not None:
            gnorm = self._grad_norm() if gnorm is None else gnorm
            coef = (self.max_grad_norm / (gnorm + 1e-6)).clamp(max=1.0)  # as torch's clip_grad_norm_
            for _, gs in self._grads():
                torch._foreach_mul_(gs, coef.to(gs[0].device))

    def _base_state_tensors(self) -> list[Tensor] | None:
        """Tensors of the base optimizer's state for parameters with a gradient; ``None`` while a
        parameter that will be stepped has no state yet (unless a step showed that it never gets any)."""
        out: list[Tensor] = []
        for ps, _ in self._grads():
            for p in ps:
                st = self.base.state.get(p)
                if st:
                    out.extend(v for v in st.values() if isinstance(v, Tensor))
                elif id(p) not in self._stateless_ids:  # stateless bases (SGD without momentum) pass
                    return None
        return out

    def _guarded_base_step(self, finite: Tensor, gnorm: Tensor | None) -> Tensor:
        """The base step, kept only if ``finite`` and the stepped weights are finite (a NaN learning
        rate or optimizer state is caught here too); returns ``skipped``.

        Device mode (default): the base steps unconditionally and parameters and state tensors are
        selected back bit for bit, with no host synchronisation; it costs one copy of the base state.
        Host mode: one ``bool(finite)`` per step decides whether ``base.step()`` runs at all; used on the
        first step (the state does not exist yet), and from then on for bases whose step changes
        anything a device-side selection cannot put back: values in ``param_groups`` (step counters,
        Prodigy's ``d``), state entries rebound to new tensors, or step post-hooks (an EMA).
        """
        self._clip(gnorm)
        state = self._base_state_tensors()
        if state is None or self._host_skip or self._has_step_post_hooks():
            return self._host_base_step(finite, first=state is None)
        with torch.no_grad():
            if len(self._state_backup) != len(state) or any(
                a.shape != b.shape or a.dtype != b.dtype or a.device != b.device
                for a, b in zip(self._state_backup, state)
            ):
                self._state_backup = [torch.empty_like(t) for t in state]
            if state:
                torch._foreach_copy_(self._state_backup, state)
            snapshot = _Snapshot(self.base, self._grads())
            try:
                self.base.step()
            except BaseException:
                if state:
                    torch._foreach_copy_(state, self._state_backup)
                snapshot.restore()
                raise
            self._base_done = True
            params = self._flat_params()
            keep = finite & self._all_finite(params)
            backups = [b for g in self._groups for b in g.backup]
            if snapshot.changed():  # the base keeps state we cannot select back on the device
                self._host_skip = True
                if not bool(keep):  # one host decision, this step only: undo everything
                    bitwise_select_(keep, params + state, backups + self._state_backup)
                    snapshot.restore()
                return ~keep
            bitwise_select_(keep, params + state, backups + self._state_backup)
        return ~keep

    def _host_base_step(self, finite: Tensor, first: bool) -> Tensor:
        """Host mode of :meth:`_guarded_base_step`: decide on the host, step only a finite step."""
        params = self._flat_params()
        if not first:
            self._state_backup = []  # host mode keeps no copy of the state
        keep = finite & self._all_finite(self._state_tensors_now())
        if bool(keep):
            snapshot = _Snapshot(self.base, self._grads()) if first else None
            self.base.step()
            self._base_done = True
            if first:
                self._stateless_ids.update(
                    id(p) for ps, _ in self._grads() for p in ps if not self.base.state.get(p)
                )
                if snapshot is not None and snapshot.changed(groups_only=True):
                    self._host_skip = True
            if not bool(self._all_finite(params)):  # a NaN learning rate: put the weights back
                with torch.no_grad():
                    for g in self._groups:
                        g.restore()
                return torch.ones((), dtype=torch.bool, device=finite.device)
            return ~keep
        self._base_done = True
        return ~keep

    def _state_tensors_now(self) -> list[Tensor]:
        return [v for ps, _ in self._grads() for p in ps for v in self.base.state.get(p, {}).values()
                if isinstance(v, Tensor) and v.is_floating_point()]

    def _has_step_post_hooks(self) -> bool:
        from torch.optim.optimizer import _global_optimizer_post_hooks

        return bool(self.base._optimizer_step_post_hooks) or bool(_global_optimizer_post_hooks)

    def _all_finite(self, tensors: list[Tensor]) -> Tensor:
        """One 0-d bool tensor on the parameters' device: every floating tensor in ``tensors`` is finite
        (max-norms, which cannot overflow; no host sync)."""
        device = self._groups[0].params[0].device
        by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for t in tensors:
            if t.is_floating_point() or t.is_complex():
                by_kind.setdefault((t.device, t.dtype), []).append(t)
        ok: Tensor | None = None
        for ts in by_kind.values():
            f = torch.isfinite(torch.stack(torch._foreach_norm(ts, float("inf"))).amax()).to(device)
            ok = f if ok is None else ok & f
        return ok if ok is not None else torch.ones((), dtype=torch.bool, device=device)

    def _scaled_base_step(self, finite: Tensor) -> Tensor:
        """The GradScaler path without ``scaler.step`` (which reads ``found_inf`` on the host every
        step): unscale, then the engine's own guarded step, then ``scaler.update()``."""
        scaler = self._scaler
        assert scaler is not None
        grads = self._grads()
        if grads:  # an overflow in pass 1 must skip the step and lower the scale too: show it to the scaler
            g = grads[0][1][0]
            g.mul_(torch.where(finite, 1.0, float("nan")).to(g.dtype))
        scaler.unscale_(self.base)
        gnorm = self._grad_norm()
        skipped = self._guarded_base_step(torch.isfinite(gnorm), gnorm)
        _mark_stepped(scaler, self.base)
        scaler.update()
        self._base_done = True
        return skipped


def _mark_stepped(scaler: torch.amp.GradScaler, base: torch.optim.Optimizer) -> None:
    """Tell the scaler that ``base`` stepped (what ``scaler.step`` records), so ``update()`` runs."""
    from torch.amp.grad_scaler import OptState

    scaler._per_optimizer_states[id(base)]["stage"] = OptState.STEPPED


def reset_scaler(scaler: torch.amp.GradScaler | None, base: torch.optim.Optimizer) -> None:
    """Forget that ``base`` was unscaled in a step that raised (else every later step would raise)."""
    if scaler is not None:
        scaler._per_optimizer_states.pop(id(base), None)


class _Snapshot:
    """What a base step may change beyond the tensors it updates in place: the values in
    ``param_groups`` and which tensor each state entry is bound to (host-side, no kernels, except a
    clone of any tensor kept in a group)."""

    def __init__(self, base: torch.optim.Optimizer, pairs: GradPairs) -> None:
        self.base = base
        self.groups = [
            {k: (v, v._version, v.clone()) if isinstance(v, Tensor) else (v, None, None)
             for k, v in g.items() if k != "params"}
            for g in base.param_groups
        ]
        self.states = [(st, dict(st)) for ps, _ in pairs for p in ps if (st := base.state.get(p)) is not None]
        self.fresh = [p for ps, _ in pairs for p in ps if p not in base.state]

    def changed(self, groups_only: bool = False) -> bool:
        for g, old in zip(self.base.param_groups, self.groups):
            if set(g) - {"params"} != set(old):
                return True
            for k, (v, version, _) in old.items():
                now = g[k]
                if now is not v and not (version is None and _same(now, v)):
                    return True
                if version is not None and now._version != version:
                    return True
        if groups_only:
            return False
        return any(set(st) != set(old) or any(st[k] is not v for k, v in old.items())
                   for st, old in self.states)

    def restore(self) -> None:
        for g, old in zip(self.base.param_groups, self.groups):
            for k in [k for k in g if k != "params" and k not in old]:
                del g[k]
            for k, (v, version, copy) in old.items():
                if copy is not None and v._version != version:
                    v.copy_(copy)
                g[k] = v
        for st, old in self.states:
            st.clear()
            st.update(old)
        for p in self.fresh:
            self.base.state.pop(p, None)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values without a boolean equality count as changed
        return False
