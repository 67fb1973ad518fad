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

import torch
from torch import Tensor, nn

from sam_tutorial.optim.base import Inputs, LossFn, PerturbedOptimizer, StepStats, Targets


class SAM(PerturbedOptimizer):
    """Sharpness-aware minimization on the mini-batch (``m = B``); USAM with ``normalize=False``.

    Args:
        model: the module to train.
        base: any ``torch.optim.Optimizer`` instance over the model's parameters.
        rho: radius ρ >= 0 of the perturbation (``0``: the base optimizer alone).
        normalize: SAM (``True``) or USAM (``False``).
        adaptive: ASAM's element-wise scaling T = abs(w) + ``adaptive_eps`` (ρ is then typically ~10x
            larger).
        adaptive_eps: the η of ASAM's T (Kwon et al. use 0.01).
        scaler: optional ``torch.amp.GradScaler`` (float16).
        skip_nonfinite: skip the whole step on a non-finite loss or gradient.
        scope: under ``DistributedDataParallel``, ``"local"`` (default) or ``"global"``; see
            ``sam_tutorial.optim.base`` (ignored for a model that is not DDP-wrapped).

    Three ways to drive it:

    * ``opt.step(inputs, targets, loss_fn)`` runs both passes (``loss_fn`` returns per-sample losses);
    * ``opt.step(closure)``, the torch closure contract: the closure zeroes the gradients, computes the
      loss, calls ``backward`` and returns the loss; SAM calls it at w and at w + e and returns the
      first loss;
    * by hand: ``loss.backward(); opt.first_step(); loss_at_w_plus_e.backward(); opt.second_step()``.
    """

    _supports_closure = True

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
    ) -> None:
        super().__init__(
            model,
            base,
            rho=rho,
            normalize=normalize,
            scaler=scaler,
            skip_nonfinite=skip_nonfinite,
            scope=scope,
        )
        if adaptive_eps < 0:
            raise ValueError(f"adaptive_eps must be >= 0, got {adaptive_eps!r}")
        self.adaptive = bool(adaptive)
        self.adaptive_eps = float(adaptive_eps)
        self._pending: tuple[Tensor, Tensor] | None = None

    # ------------------------------------------------------------ hand-written loops
    def first_step(self, zero_grad: bool = True) -> Tensor:
        """Move to w + e using the gradients currently in ``.grad`` (from a backward pass at w).

        Saves the weights and the model's buffers (so BatchNorm statistics of the next pass are undone
        by ``second_step``). Returns ||e|| as a 0-d tensor.
        """
        gnorm = self.grad_norm(self.adaptive_eps if self.adaptive else None)
        self.save_weights()
        self.save_buffers()
        scale = self.perturbation_scale(gnorm)
        self.perturb(scale, self.adaptive_eps if self.adaptive else None)
        self._pending = (gnorm, scale * gnorm)
        if zero_grad:
            self.zero_grad()
        return scale * gnorm

    def second_step(self, zero_grad: bool = False) -> Tensor:
        """Return to w (exactly), restore the buffers, and take the base step with the gradients now in
        ``.grad`` (from a backward pass at w + e). Returns ``skipped`` as a 0-d bool tensor."""
        if self._pending is None:
            raise RuntimeError("second_step() called without first_step()")
        gnorm, _ = self._pending
        self._pending = None
        skipped = self.finish(torch.isfinite(gnorm))
        if zero_grad:
            self.zero_grad()
        return skipped

    # ------------------------------------------------------------ the two step forms
    def _perturbed_step(
        self, inputs: Inputs, targets: Targets, loss_fn: LossFn, n: int
    ) -> StepStats:
        with self.ascent_context():
            loss = self.forward_losses(inputs, targets, loss_fn, n).mean()
            self.zero_grad()
            self.backward(loss)
        enorm = self.first_step()
        gnorm = self._pending[0]  # type: ignore[index]
        loss2 = self.forward_losses(inputs, targets, loss_fn, n).mean()
        self.backward(self.poison_unless(loss2, torch.isfinite(loss) & torch.isfinite(gnorm)))
        self._pending = None
        skipped = self.finish(torch.isfinite(loss) & torch.isfinite(loss2) & torch.isfinite(gnorm))
        return StepStats(loss.detach(), loss2.detach(), self.unscaled(gnorm), enorm, skipped)

    def _closure_step(self, closure: Callable[[], Tensor]) -> Tensor:
        if self.scaler is not None:
            raise ValueError("step(closure) does not support scaler=; use step(inputs, targets, ...)")
        with torch.enable_grad(), self.ascent_context() if self.rho else nullcontext():
            loss = closure()
        if self.rho == 0.0:
            self.save_weights()
            ok = torch.isfinite(self.grad_norm())
            if isinstance(loss, Tensor):
                ok = ok & torch.isfinite(loss.detach()).all()
            self.base_step(ok)
            return loss
        self.first_step(zero_grad=False)
        with torch.enable_grad():
            loss2 = closure()
        gnorm, _ = self._pending  # type: ignore[misc]
        self._pending = None
        ok = torch.isfinite(gnorm)
        for value in (loss, loss2):
            if isinstance(value, Tensor):
                ok = ok & torch.isfinite(value.detach()).all()
        self.finish(ok)
        return loss
