"""What real training code calls on a SAM-family optimizer besides ``step(batch)`` (private): the torch
``Optimizer`` surface shared with the base optimizer (``param_groups``, ``state``, ``defaults``),
copies and pickles, the gradients a step leaves (to refuse gradients accumulated outside a closure
step), a closure handed over with the batch (Lightning's manual optimization), ``step()`` without a
batch (``torch.distributed.checkpoint``'s state initialisation, or an error naming the caller), and
the ``perturbed`` flag a Lightning ``training_step`` reads. :class:`PerturbedOptimizer` inherits it."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sam_tutorial.optim._util import RNGState

__all__: list[str] = []  # private module


_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


class _Shared:
    """Per-optimizer flags that a shallow copy of its ``__dict__`` must share: whether a pass at w + e
    runs, and the gradients the last step or ``zero_grad`` left (weak references and versions)."""

    def __init__(self) -> None:
        self.perturbed = False
        self.grads: dict[int, tuple[weakref.ref[Tensor], int] | None] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"perturbed": False, "grads": {}}  # weak references do not pickle; a copy starts afresh


def _called_by_grad_scaler() -> bool:
    """Whether ``step()`` was called from ``torch.amp.GradScaler.step`` (a few frames up)."""
    frame = sys._getframe(1)
    for _ in range(8):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return False
        if frame.f_code.co_filename.endswith("grad_scaler.py"):
            return True
    return False


def _check_group_rho(groups: list[dict[str, Any]]) -> None:
    """Refuse per-group ``rho`` / ``adaptive`` (the davda54/sam API), which this family does not read."""
    for i, g in enumerate(groups):
        keys = sorted({"rho", "adaptive"} & set(g))
        if keys:
            raise ValueError(
                f"param_groups[{i}] of the base optimizer sets {keys}: the SAM family takes one rho (and "
                "adaptive) for the whole model, as arguments of the SAM-family optimizer, e.g. SAM(model, "
                "base, rho=0.05); remove them from the groups. To leave some parameters unperturbed, "
                "give them to a second optimizer"
            )


def _record(grad: Tensor | None) -> tuple[weakref.ref[Tensor], int] | None:
    return None if grad is None else (weakref.ref(grad), grad._version)


class Integration:
    """Mixin of :class:`~sam_tutorial.optim.base.PerturbedOptimizer` (state lives on that object)."""

    base: torch.optim.Optimizer
    _shared: _Shared
    _per_sample: Any
    _rng_at_start: RNGState | None

    # provided by PerturbedOptimizer and the engine
    def _refresh_groups(self) -> Any:
        raise NotImplementedError

    def _save_buffers(self, before_step: bool = False) -> None:
        raise NotImplementedError

    def _restore_buffers(self, before_step: bool = False) -> None:
        raise NotImplementedError

    def _closure_step(self, closure: Callable[[], Tensor]) -> Tensor:
        raise NotImplementedError

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The base optimizer's ``param_groups`` (the same list object, always)."""
        return self.base.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self.base.param_groups = groups

    @property
    def state(self) -> Any:
        """The base optimizer's ``state``."""
        return self.base.state

    @state.setter
    def state(self, state: Any) -> None:
        self.base.state = state

    @property
    def defaults(self) -> dict[str, Any]:
        """The base optimizer's ``defaults``."""
        return self.base.defaults

    @defaults.setter
    def defaults(self, defaults: dict[str, Any]) -> None:
        self.base.defaults = defaults

    @property
    def perturbed(self) -> bool:
        """True while a pass at the perturbed point w + e runs (e.g. inside a closure's second call):
        a ``training_step`` can log and update metrics only when it is False."""
        return self._shared.perturbed

    def _run_side_closure(self, closure: Callable[[], Any]) -> None:
        """A closure passed with the batch: Lightning's manual optimization (``LightningOptimizer.step``
        always adds one, which runs no backward). It is called first, as torch optimizers call theirs;
        one that leaves gradients is refused, since the batch step would drop them."""
        if not callable(closure):
            raise ValueError(f"closure must be callable, got {type(closure).__name__}")
        self._remember_grads()
        params = [p for g in self.param_groups for p in g["params"]]
        held = [None if p.grad is None else p.grad.clone() for p in params]  # usually all None
        self._refresh_groups()
        self._save_buffers(before_step=True)
        rng = RNGState({p.device for p in params[:1]})
        with torch.enable_grad():
            closure()
        if self._accumulated_grads():
            for p, g in zip(params, held):
                p.grad = g
            self._restore_buffers(before_step=True)
            rng.restore()
            self._remember_grads()
            raise ValueError(
                "step: the closure computed gradients and a batch was given too; the batch step runs its "
                "own passes and would drop them: pass either a closure (SAM) or the batch "
                "(inputs, targets, loss_fn), not both"
            )

    def _no_batch_step(self) -> None:
        """``step()`` with neither batch nor closure: torch.distributed.checkpoint's state initialisation
        (every learning rate 0: the base steps once on zero gradients, which changes no weight), or an
        error that says which caller cannot drive a perturbed step and what to use instead."""
        if all(g.get("lr", None) is not None and not bool(torch.as_tensor(g["lr"]).ne(0).any())
               for g in self.param_groups):
            self.base.step()
            return None
        name = type(self).__name__
        own = type(self)._closure_step.__qualname__.split(".")[0] != "PerturbedOptimizer"
        closure = "; or a closure" if own else ""
        if _called_by_grad_scaler():
            raise ValueError(
                f"{name}.step() was called by GradScaler.step(opt) without the batch: that is Lightning's "
                "precision='16-mixed' (or an AMP loop), which runs the backward pass itself and then asks "
                "for a step from those gradients; a perturbed step needs to run its own passes. With "
                "Lightning use precision='bf16-mixed' or '32-true'; for float16 in your own loop pass "
                "scaler=torch.amp.GradScaler(...) to the optimizer and call "
                "opt.step(inputs, targets, loss_fn)"
            )
        raise ValueError(
            f"{name}.step() needs the batch: step(inputs, targets, loss_fn) or step(batch, loss_fn) with "
            f"loss_fn(model, batch) -> per-sample losses{closure}. GradScaler.step(opt), Hugging Face's "
            "Trainer and other callers of a bare opt.step() cannot drive it: pass scaler= to the "
            "constructor and call opt.step(...) with the batch"
        )

    def _remember_grads(self) -> None:
        """Record the gradients as the optimizer leaves them (after a step or ``zero_grad``), so that a
        closure step can tell gradients accumulated since (which it cannot use) from its own."""
        self._shared.grads = {
            id(p): _record(p.grad) for g in self.param_groups for p in g["params"]
        }

    def _accumulated_grads(self) -> int:
        """How many parameters hold a gradient the optimizer did not leave (accumulated since)."""
        left = self._shared.grads
        count = 0
        for g in self.param_groups:
            for p in g["params"]:
                grad = p.grad
                if grad is None:
                    continue
                rec = left.get(id(p))
                if rec is None or rec[1] != grad._version or rec[0]() is not grad:
                    count += 1
        return count

    def __getstate__(self) -> dict[str, Any]:  # torch's keeps only defaults, state and param_groups
        state = self.__dict__.copy()
        # An LR scheduler patches ``step`` on the instance with a wrapper that calls *this* object: a copy
        # must use its own class's step. What one step held (the loss function) is not state.
        for key in ("step", "_per_sample", "_rng_at_start"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._per_sample = None
        self._rng_at_start = None
