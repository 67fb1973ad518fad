"""n-SAM and n-USAM: the perturbation comes from the full-data gradient (paper §2.3).

Algorithm, one step on a batch γ with a data set D = (X, Y) of size n fixed at construction:

.. code-block:: text

    g  = ∇f_D(w) = (1/n) Σ_{i∈D} ∇f_i(w)     # pass 1 over D, in chunks of chunk_size
    e  = ρ g/‖g‖   (n-SAM)      e = ρ g   (n-USAM, normalize=False)
    g' = ∇f_γ(w + e)                          # pass 2 on the batch
    w  = base_step(w, g')

i.e. x_{k+1} = x_k − η ∇f_γ(x_k + ρ ∇f(x_k)/‖∇f(x_k)‖). Its SDE drift carries ρ/2‖∇f‖² (n-USAM,
Thm 3.4) or ρ‖∇f‖ (n-SAM) and *no* term in tr V, which is why n-SAM brings almost no generalisation
gain (Andriushchenko & Flammarion, 2022). With ``D`` equal to the batch, n-SAM is SAM.

Under DistributedDataParallel every rank holds its own ``data`` (of the same size on every rank):
``scope="local"`` perturbs with the rank's own data gradient; ``scope="global"`` with its average over
ranks (the full-data gradient when ``data`` is each rank's shard of the training set).

BatchNorm: pass 1 over D runs in train mode and updates the running statistics (once per chunk; once
when ``chunk_size`` is None, as SAM's first pass does); pass 2 never does. ``StepStats.loss`` is the mean
loss over D at w.

References:
    Andriushchenko, Flammarion. Towards Understanding Sharpness-Aware Minimization. ICML 2022.
    Luo, Harandi, Phung, Le. Unveiling m-Sharpness Through the Structure of Stochastic Gradient Noise.
    NeurIPS 2025.

Example:
    >>> import torch
    >>> from sam_tutorial.optim import NSAM
    >>> _ = torch.manual_seed(0)
    >>> X, Y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = NSAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, data=(X, Y),
    ...            chunk_size=16)
    >>> stats = opt.step(X[:8], Y[:8], torch.nn.CrossEntropyLoss(reduction="none"))
    >>> round(float(stats.perturbation_norm), 6)
    0.05
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from sam_tutorial.optim.base import (
    Inputs,
    LossFn,
    PerturbedOptimizer,
    StepStats,
    Targets,
    as_tuple,
    batch_size,
)


def _rows(x: Inputs, start: int, stop: int, device: torch.device) -> Inputs:
    parts = tuple(t[start:stop].to(device, non_blocking=True) for t in as_tuple(x))
    return parts if isinstance(x, tuple) else parts[0]


class NSAM(PerturbedOptimizer):
    """SAM whose perturbation is built from the gradient over a fixed data set ``data``.

    Args:
        model: the module to train.
        base: any ``torch.optim.Optimizer`` instance over the model's parameters.
        rho: radius ρ >= 0.
        data: ``(X, Y)``, the set whose mean-loss gradient forms the perturbation (usually the whole
            training set; on any device, moved chunk by chunk to the batch's device).
        normalize: n-SAM (``True``) or n-USAM (``False``).
        chunk_size: samples per forward/backward over ``data`` (``None``: all at once).
        scaler: optional ``torch.amp.GradScaler`` (float16).
        skip_nonfinite: skip the whole step on a non-finite loss or gradient.
        scope: under ``DistributedDataParallel``, ``"local"`` (default) or ``"global"``; see
            ``sam_tutorial.optim.base`` (ignored for a model that is not DDP-wrapped).
    """

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        rho: float,
        data: tuple[Inputs, Tensor],
        normalize: bool = True,
        chunk_size: int | None = None,
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
        if not isinstance(data, tuple | list) or len(data) != 2:
            raise ValueError("data must be a pair (X, Y) of tensors with the samples on dim 0")
        try:
            self.n = batch_size(data[0], data[1])
        except ValueError as err:
            raise ValueError(f"data: {err}") from None
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be an integer >= 1 or None, got {chunk_size!r}")
        self.data = (data[0], data[1])
        self.chunk_size = chunk_size or self.n

    def _perturbed_step(
        self, inputs: Inputs, targets: Targets, loss_fn: LossFn, n: int
    ) -> StepStats:
        device = as_tuple(inputs)[0].device
        total = torch.zeros((), device=device)
        starts = range(0, self.n, self.chunk_size)
        for start in starts:
            stop = min(start + self.chunk_size, self.n)
            xs, ys = (_rows(d, start, stop, device) for d in self.data)
            # DDP: local scope never synchronises pass 1; global synchronises the accumulated gradient
            last_global = self.scope == "global" and start == starts[-1]
            with nullcontext() if last_global else self.no_sync():
                part = self.forward_losses(xs, ys, loss_fn, stop - start).sum() / self.n
                if start == 0:
                    self.zero_grad()
                self.backward(part)
            total = total + part.detach()
        gnorm = self.grad_norm()
        self.save_weights()
        self.save_buffers()
        scale = self.perturbation_scale(gnorm)
        self.perturb(scale)
        self.zero_grad()
        loss2 = self.forward_losses(inputs, targets, loss_fn, n).mean()
        self.backward(self.poison_unless(loss2, torch.isfinite(total) & torch.isfinite(gnorm)))
        skipped = self.finish(torch.isfinite(total) & torch.isfinite(loss2) & torch.isfinite(gnorm))
        return StepStats(total, loss2.detach(), self.unscaled(gnorm), scale * gnorm, skipped)
