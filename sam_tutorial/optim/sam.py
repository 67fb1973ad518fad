"""SAM and USAM (mini-batch sharpness-aware minimization), with the ASAM option.

Algorithm (Foret et al., 2021; the paper's Eq. 2 and its first-order solution), one step on a batch γ:

.. code-block:: text

    g  = ∇f_γ(w)                                   # pass 1
    e  = ρ g / ‖g‖          (SAM, normalize=True)
    e  = ρ g                (USAM, normalize=False)
    e  = ρ T² g / ‖T g‖,  T = |w| + adaptive_eps   (ASAM, adaptive=True; Kwon et al., 2021)
    g' = ∇f_γ(w + e)                               # pass 2, same batch
    w  = base_step(w, g')                          # the base optimizer steps from w, not from w + e

So SAM follows x_{k+1} = x_k − η ∇f_γ(x_k + ρ ∇f_γ(x_k)/‖∇f_γ(x_k)‖) with plain SGD as the base, and
USAM x_{k+1} = x_k − η ∇f_γ(x_k + ρ ∇f_γ(x_k)) (paper §2; the SDE analysis of chapter 3 starts from
USAM). The perturbation uses the gradient of the loss only; weight decay stays in the base optimizer.

References:
    Foret, Kleiner, Mobahi, Neyshabur. Sharpness-Aware Minimization for Efficiently Improving
    Generalization. ICLR 2021.
    Kwon, Kim, Park, Choi. ASAM: Adaptive Sharpness-Aware Minimization. ICML 2021.
    Luo, Harandi, Phung, Le. Unveiling m-Sharpness Through the Structure of Stochastic Gradient Noise.
    NeurIPS 2025.

Example:
    >>> import torch
    >>> from sam_tutorial.optim import SAM
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = SAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05)
    >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    >>> stats = opt.step(x, y, torch.nn.CrossEntropyLoss(reduction="none"))
    >>> bool(stats.loss_perturbed > stats.loss), round(float(stats.perturbation_norm), 6)
    (True, 0.05)
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from sam_tutorial.optim._util import check_real
from sam_tutorial.optim.base import PerturbedOptimizer, StepStats

__all__ = ["SAM"]


class SAM(PerturbedOptimizer):
    """Sharpness-aware minimization on the mini-batch (``m = B``); USAM with ``normalize=False``.

    Book: chapter 1, "The sharpness-aware objective"; paper: Eq. (2); USAM in Thm. 3.3.

    Args:
        model: the module to train.
        base: any ``torch.optim.Optimizer`` instance over the model's parameters.
        rho: radius ρ >= 0 of the perturbation (``0``: the base optimizer alone).
        normalize: SAM (``True``) or USAM (``False``).
        adaptive: ASAM's element-wise scaling T = abs(w) + ``adaptive_eps`` (ρ is then typically ~10x
            larger).
        adaptive_eps: the η of ASAM's T (Kwon et al. use 0.01), a finite number >= 0.
        scaler: optional ``torch.amp.GradScaler`` (float16).
        skip_nonfinite: skip the whole step on a non-finite loss or gradient.
        scope: under ``DistributedDataParallel``, ``"local"`` (default) or ``"global"``; see
            ``sam_tutorial.optim.base`` (ignored for a model that is not DDP-wrapped).
        max_grad_norm: clip the descent gradient to this norm before the base step (``None``: no).

    Three ways to drive it:

    * ``opt.step(inputs, targets, loss_fn)`` (or ``opt.step(batch, loss_fn)``) runs both passes;
    * ``opt.step(closure)`` or ``opt.step(closure=closure)``, the torch closure contract: the closure
      computes the loss, calls ``backward`` and returns the loss (SAM zeroes the gradients before each
      call); SAM calls it at w and at w + e and returns the first loss;
    * by hand: ``loss.backward(); opt.first_step(); loss_at_w_plus_e.backward(); opt.second_step()``.
    """

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        rho: float,
        normalize: bool = True,
        adaptive: bool = False,
        adaptive_eps: float = 0.01,
        scaler: torch.amp.GradScaler | None = None,
        skip_nonfinite: bool = True,
        scope: str | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__(
            model,
            base,
            rho=rho,
            normalize=normalize,
            scaler=scaler,
            skip_nonfinite=skip_nonfinite,
            scope=scope,
            max_grad_norm=max_grad_norm,
        )
        self.adaptive = bool(adaptive)
        self.adaptive_eps = check_real("adaptive_eps", adaptive_eps)
        self._pending: Tensor | None = None

    # ------------------------------------------------------------ hand-written loops
    def first_step(self, zero_grad: bool = True) -> Tensor:
        """Move to w + e using the gradients currently in ``.grad`` (from a backward pass at w).

        Saves the weights and the model's buffers (so BatchNorm statistics of the next pass are undone
        by ``second_step``). Returns ||e|| as a 0-d tensor.

        Raises:
            RuntimeError: if a first step is already pending, or no parameter has a gradient.
        """
        self._check_not_pending()
        groups = self._refresh_groups()
        if not self._grads():
            raise RuntimeError("first_step(): no parameter has a gradient; call loss.backward() at w first")
        self._scale = self._current_scale(groups[0].params[0].device)
        self._save_weights()
        self._save_buffers()
        self._save_buffers(before_step=True)  # a skipped step keeps the buffers pass 1 left
        gnorm, enorm = self._ascend()
        self._pending = gnorm
        if zero_grad:
            self.zero_grad()
        return enorm

    def second_step(self, zero_grad: bool = False) -> Tensor:
        """Return to w (exactly), restore the buffers, and take the base step with the gradients now in
        ``.grad`` (from a backward pass at w + e). Returns ``skipped`` as a 0-d bool tensor."""
        if self._pending is None:
            raise RuntimeError("second_step() called without first_step()")
        gnorm, self._pending = self._pending, None
        skipped = self._restore_and_step(torch.isfinite(gnorm))
        self._opt_called = True  # an LR scheduler attached to this object sees a step
        if zero_grad:
            self.zero_grad()
        return skipped

    def restore(self) -> None:
        """Abandon a pending ``first_step``: weights back to w and buffers as ``first_step`` found them
        (bit for bit), no base step; e.g. after an exception during the pass at w + e. The gradients are
        left as they are (call ``zero_grad``).

        Raises:
            RuntimeError: if no first step is pending.
        """
        if self._pending is None:
            raise RuntimeError("restore() called without a pending first_step()")
        self._pending = None
        self._restore_weights()
        self._restore_buffers(before_step=True)

    def _ascend(self, adaptive_eps: float | None = None,
                pairs: list[tuple[list[Tensor], list[Tensor]]] | None = None) -> tuple[Tensor, Tensor]:
        """The engine's ascent, scaled by ASAM's T = abs(w) + adaptive_eps when ``adaptive``."""
        return super()._ascend(self.adaptive_eps if self.adaptive else adaptive_eps, pairs)

    # ------------------------------------------------------------ the two step forms
    def _perturbed_step(self, batch: Any, batch_size: int) -> StepStats:
        with self._ascent_context():
            loss = self._losses(batch, batch_size).mean()
            self._clear_grads()
            pairs = self._ascent_grads(loss)
        self._save_buffers()
        gnorm, enorm = self._ascend(pairs=pairs)
        self._clear_grads()
        loss2 = self._losses(batch, batch_size).mean()
        finite = torch.isfinite(loss) & torch.isfinite(gnorm)
        self._backward(self._nan_unless(loss2, finite))
        skipped = self._restore_and_step(finite & torch.isfinite(loss2))
        return StepStats(loss.detach(), loss2.detach(), self._unscaled(gnorm), enorm, skipped)

    def _closure_step(self, closure: Callable[[], Tensor]) -> Tensor:
        if self.scaler is not None:
            raise ValueError("step(closure) does not support scaler=; use step(inputs, targets, loss_fn)")
        if not callable(closure):
            raise ValueError(f"closure must be callable, got {type(closure).__name__}")
        device = self._refresh_groups()[0].params[0].device
        accumulated = self._accumulated_grads()
        if accumulated and self.rho:
            raise ValueError(
                f"{accumulated} parameter(s) hold gradients accumulated outside step(closure) (a backward "
                "pass since the last step or zero_grad()); a perturbed step cannot evaluate those samples "
                "at w + e, so it would silently drop them. Lightning's accumulate_grad_batches > 1 does "
                "this: use accumulate_grad_batches=1 and a larger batch, MSAM(model, base, rho, m=micro) "
                "on the whole batch, or the hand loop (first_step / second_step; see the README)"
            )
        outside = self._outside_params()
        with torch.enable_grad(), self._transaction(device):
            held = [p.grad for p in outside]
            self._clear_grads()
            with self._ascent_context() if self.rho else nullcontext():
                loss = closure()
            self._check_closure_grads()
            finite = self._finite(loss)
            if self.rho == 0.0:
                self._checked_base_step(finite)
                return loss
            for p, g in zip(outside, held):  # pass 1's gradient is not theirs (see _ascent_grads)
                p.grad = g
            self._save_buffers()
            gnorm, _ = self._ascend()
            self._clear_grads()
            loss2 = closure()
            self._check_closure_grads()
            self._restore_and_step(finite & torch.isfinite(gnorm) & self._finite(loss2))
        return loss

    def _outside_params(self) -> list[Tensor]:
        """The model's trainable parameters that the base optimizer does not hold."""
        own = {id(p) for g in self.param_groups for p in g["params"]}
        return [p for p in self.model.parameters() if p.requires_grad and id(p) not in own]

    def _check_closure_grads(self) -> None:
        if not self._grads():
            raise ValueError(
                "the closure produced no gradient: it must compute the loss, call loss.backward() and "
                "return the loss"
            )

    def _finite(self, loss: Any) -> Tensor:
        device = self._groups[0].params[0].device
        if isinstance(loss, Tensor):
            return torch.isfinite(loss.detach()).all().to(device)
        return torch.ones((), dtype=torch.bool, device=device)

