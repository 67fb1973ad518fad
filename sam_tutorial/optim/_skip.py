"""The guarded base step of the SAM family (private): a step taken only if it is finite, and otherwise
undone bit for bit, on the device (no host synchronisation) or, for bases a device-side selection cannot
restore, decided on the host; the GradScaler path without ``scaler.step``'s per-step synchronisation.
:class:`~sam_tutorial.optim._engine.Engine` inherits it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sam_tutorial.optim._util import Group, bitwise_select_, weights_changed

__all__: list[str] = []  # private module

GradPairs = list[tuple[list[Tensor], list[Tensor]]]
"""Per (device, dtype) group: the parameters and their gradients."""


class GuardedStep:
    """The base optimizer's step behind the finiteness guard; state lives on the optimizer object."""

    base: torch.optim.Optimizer
    skip_nonfinite: bool
    max_grad_norm: float | None
    _scaler: torch.amp.GradScaler | None
    _groups: list[Group]
    _buffers: list[Tensor]
    _buf_before_step: list[Tensor]
    _state_backup: list[Tensor]
    _stateless_ids: set[int]
    _base_done: bool
    _host_skip: bool

    # provided by Engine (weights and gradients)
    def _grads(self) -> GradPairs:
        raise NotImplementedError

    def _grad_norm(self, adaptive_eps: float | None = None, pairs: GradPairs | None = None) -> Tensor:
        raise NotImplementedError

    def _flat_params(self) -> list[Tensor]:
        raise NotImplementedError

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
                if snapshot is not None:  # first step: drop the state it created (momentum buffers)
                    snapshot.restore()
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
