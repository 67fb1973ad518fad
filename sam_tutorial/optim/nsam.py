"""n-SAM and n-USAM: the perturbation comes from the full-data gradient (paper §2.3).

Algorithm, one step on a batch γ with a data set D of size n fixed at construction (``data=(X, Y)`` with
the ``step(inputs, targets, loss_fn)`` form, or any batch with the ``step(batch, loss_fn)`` form):

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
from typing import Any

import torch
from torch import nn

from sam_tutorial.optim._util import (
    TargetsForm,
    batch_device,
    check_int_or_none,
    count_samples,
    split,
    to_device,
)
from sam_tutorial.optim.base import PerturbedOptimizer, StepStats

__all__ = ["NSAM"]


class NSAM(PerturbedOptimizer):
    """SAM whose perturbation is built from the gradient over a fixed data set ``data``.

    Book: chapter 1, "Where the perturbation's gradient comes from"; paper: Thm. 3.4.

    Args:
        model: the module to train.
        base: any ``torch.optim.Optimizer`` instance over the model's parameters.
        rho: radius ρ >= 0.
        data: the set whose mean-loss gradient forms the perturbation (usually the whole training
            set; on any device, moved chunk by chunk to the batch's device): ``(X, Y)`` for
            ``step(inputs, targets, loss_fn)``, or a batch of the form ``step(batch, loss_fn)`` takes.
        normalize: n-SAM (``True``) or n-USAM (``False``).
        chunk_size: samples per forward/backward over ``data`` (``None``: all at once).
        scaler: optional ``torch.amp.GradScaler`` (float16).
        skip_nonfinite: skip the whole step on a non-finite loss or gradient.
        scope: under ``DistributedDataParallel``, ``"local"`` (default) or ``"global"``; see
            ``sam_tutorial.optim.base`` (ignored for a model that is not DDP-wrapped).
        max_grad_norm: clip the descent gradient to this norm before the base step (``None``: no).
    """

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        rho: float,
        data: Any,
        normalize: bool = True,
        chunk_size: int | None = None,
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
        if isinstance(data, tuple | list) and len(data) == 2:
            n, nt = count_samples(data[0], "data[0]"), count_samples(data[1], "data[1]")
            if n != nt:
                raise ValueError(f"data: targets has {nt} samples but inputs has {n}")
            data = (data[0], data[1])
        self.n = count_samples(data, "data")
        self.data = data
        self.chunk_size = check_int_or_none("chunk_size", chunk_size) or self.n

    def _perturbed_step(self, batch: Any, batch_size: int) -> StepStats:
        if isinstance(self._per_sample, TargetsForm) and not (
            isinstance(self.data, tuple) and len(self.data) == 2
        ):
            raise ValueError(
                "data must be a pair (X, Y) for step(inputs, targets, loss_fn); with step(batch, loss_fn) "
                "it is a batch of the same form"
            )
        if count_samples(self.data, "data") != self.n:
            raise ValueError("data changed size since construction; build a new NSAM for a new data set")
        device = batch_device(batch)
        total = torch.zeros((), device=device)
        starts = range(0, self.n, self.chunk_size)
        pairs = None
        for start in starts:
            stop = min(start + self.chunk_size, self.n)
            chunk = to_device(split(self.data, start, stop), device)
            # DDP: local scope never synchronises pass 1; global synchronises the accumulated gradient
            last_global = self.scope == "global" and start == starts[-1]
            with nullcontext() if last_global else self._no_sync():
                part = self._losses(chunk, stop - start).sum() / self.n
                if start == 0:
                    self._clear_grads()
                if self.ddp:
                    self._backward(part)
                else:  # pass 1 stays out of .grad (see PerturbedOptimizer._ascent_grads)
                    pairs = _accumulate(pairs, self._ascent_grads(part))
            total = total + part.detach()
        self._save_buffers()
        gnorm, enorm = self._ascend(pairs=pairs)
        self._clear_grads()
        loss2 = self._losses(batch, batch_size).mean()
        finite = torch.isfinite(total) & torch.isfinite(gnorm)
        self._backward(self._nan_unless(loss2, finite))
        skipped = self._restore_and_step(finite & torch.isfinite(loss2))
        return StepStats(total, loss2.detach(), self._unscaled(gnorm), enorm, skipped)


def _accumulate(total: Any, pairs: Any) -> Any:
    """Add one chunk's (params, grads) pairs to the running sum (the same parameters every chunk)."""
    if total is None:
        return pairs
    for (_, acc), (_, gs) in zip(total, pairs):
        torch._foreach_add_(acc, gs)
    return total
