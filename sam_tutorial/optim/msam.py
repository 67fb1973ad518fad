"""m-SAM and m-USAM: one perturbation per micro-batch of size m (paper §2.4).

Algorithm, one step on a batch γ of size B split into k = ⌈B/m⌉ disjoint micro-batches I_1..I_k (the last
one holds the remainder when m does not divide B, e.g. the last batch of an epoch):

.. code-block:: text

    for j = 1..k:
        g_j = ∇f_{I_j}(w)                         # pass 1 on micro-batch j
        e_j = ρ g_j/‖g_j‖  (m-SAM)   e_j = ρ g_j  (m-USAM, normalize=False)
    G = Σ_j (|I_j|/B) ∇f_{I_j}(w + e_j)           # pass 2, each micro-batch at its own point
    w = base_step(w, G)

i.e. x_{k+1} = x_k − η (m/B) Σ_j ∇f_{I_j}(x_k + ρ ∇f_{I_j}(x_k)/‖∇f_{I_j}(x_k)‖). Its SDE drift adds
ρ/2‖∇f‖² + ρ/(2m) tr V (m-USAM, Thm 3.5) or ρ E‖∇f_I‖ with size(I) = m (m-SAM), both growing as m shrinks
(Prop 3.9): the paper's explanation of m-sharpness. ``m = B`` is SAM; data-parallel SAM without a
synchronised first gradient is m-SAM with m the per-device batch.

Backends (same arithmetic, equal to float64 round-off; ``StepStats.grad_norm`` and
``perturbation_norm`` are means over micro-batches):

* ``"loop"``: the micro-batches one after another (2k forward and 2k backward passes of size m).
  BatchNorm normalises each micro-batch with its own statistics; the running statistics receive k
  sequential updates per step, one from each micro-batch's pass at w (as gradient accumulation does);
  passes at w + e_j never touch them.
* ``"vmap"``: ``torch.func.vmap`` over the k micro-batches, two batched passes. BatchNorm also
  normalises per micro-batch; the running statistics receive one update per step, with the mean of the
  k micro-batch statistics (each micro-batch updates its own copy, the copies are averaged). Memory:
  k copies of the gradients and perturbed weights (``micro_batches_per_call`` bounds it). Dropout draws
  different masks per micro-batch. A batch that m does not divide, and any step under ``torch.autocast``
  (where functorch's batched backward fails on CUDA), runs on the loop backend.
* ``"auto"``: ``"vmap"`` on CUDA, ``"loop"`` on the CPU (where the loop is faster for conv nets) and
  under DistributedDataParallel.

Under DistributedDataParallel (``scope="local"`` only) each rank runs m-SAM on its own part of the
batch and DDP averages the result: exactly single-process m-SAM on the concatenated batch, with one
gradient all-reduce per step (after the last micro-batch).

References:
    Foret, Kleiner, Mobahi, Neyshabur. Sharpness-Aware Minimization. ICLR 2021 (§4.1, m-sharpness).
    Andriushchenko, Flammarion. Towards Understanding Sharpness-Aware Minimization. ICML 2022.
    Luo, Harandi, Phung, Le. Unveiling m-Sharpness Through the Structure of Stochastic Gradient Noise.
    NeurIPS 2025.

Example:
    >>> import torch
    >>> from sam_tutorial.optim import MSAM
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = MSAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, m=4)
    >>> x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> stats = opt.step(x, y, torch.nn.CrossEntropyLoss(reduction="none"))
    >>> round(float(stats.perturbation_norm), 6)
    0.05
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from sam_tutorial.optim._util import (
    PerSampleModule,
    batch_device,
    check_choice,
    check_int,
    check_int_or_none,
    fold,
    split,
)
from sam_tutorial.optim.base import PerturbedOptimizer, StepStats

__all__ = ["BACKENDS", "MSAM"]

BACKENDS = ("auto", "loop", "vmap")


class MSAM(PerturbedOptimizer):
    """Micro-batch SAM: each micro-batch of ``m`` samples is perturbed with its own gradient.

    Args:
        model: the module to train.
        base: any ``torch.optim.Optimizer`` instance over the model's parameters.
        rho: radius ρ >= 0.
        m: micro-batch size (an integer >= 1); a batch it does not divide gets a last, smaller
            micro-batch, weighted by its size.
        normalize: m-SAM (``True``) or m-USAM (``False``).
        backend: ``"loop"``, ``"vmap"`` or ``"auto"`` (see the module docstring).
        micro_batches_per_call: micro-batches per vectorised call (``None``: all k at once); it counts
            micro-batches, where ``chunk_size`` elsewhere in the package counts samples.
        scaler: optional ``torch.amp.GradScaler`` (float16).
        skip_nonfinite: skip the whole step on a non-finite loss or gradient.
        scope: under ``DistributedDataParallel``, ``"local"`` (default) or ``"global"``; see
            ``sam_tutorial.optim.base`` (ignored for a model that is not DDP-wrapped).
        max_grad_norm: clip the descent gradient to this norm before the base step (``None``: no).
        vmap_chunk_size: deprecated name of ``micro_batches_per_call``.
    """

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        rho: float,
        m: int,
        normalize: bool = True,
        backend: str = "auto",
        micro_batches_per_call: int | None = None,
        scaler: torch.amp.GradScaler | None = None,
        skip_nonfinite: bool = True,
        scope: str | None = None,
        max_grad_norm: float | None = None,
        vmap_chunk_size: int | None = None,
    ) -> None:
        per_call_name = "micro_batches_per_call"
        if vmap_chunk_size is not None:
            if micro_batches_per_call is not None:
                raise ValueError("give micro_batches_per_call only (vmap_chunk_size is its deprecated name)")
            warnings.warn("MSAM(vmap_chunk_size=) is deprecated; call it micro_batches_per_call (it counts "
                          "micro-batches, not samples)", DeprecationWarning, stacklevel=2)
            micro_batches_per_call, per_call_name = vmap_chunk_size, "vmap_chunk_size"
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
        self.m = check_int("m", m)
        self.backend = check_choice("backend", backend, BACKENDS)
        self.micro_batches_per_call = check_int_or_none(per_call_name, micro_batches_per_call)
        if self.ddp and self.scope == "global":
            raise ValueError(
                "MSAM under DistributedDataParallel supports scope='local' only: each rank perturbs "
                "its own micro-batches (m-SAM across GPUs); for the all-reduced perturbation use "
                "SAM(scope='global')"
            )
        if self.ddp and backend == "vmap":
            raise ValueError(
                "backend='vmap' does not run under DistributedDataParallel; use 'loop' or 'auto'"
            )

    def resolved_backend(self, device: torch.device) -> str:
        """The backend a step on ``device`` uses (``"auto"``: vmap on CUDA, loop elsewhere)."""
        if self.backend != "auto":
            return self.backend
        return "vmap" if device.type == "cuda" and not self.ddp else "loop"

    def _perturbed_step(self, batch: Any, batch_size: int) -> StepStats:
        device = batch_device(batch)
        # functorch's batched backward fails under autocast (mixed half/float BatchNorm): use the loop
        divides = batch_size % self.m == 0
        if self.resolved_backend(device) == "vmap" and divides and not torch.is_autocast_enabled(device.type):
            return self._vmap_step(batch, batch_size)
        return self._loop_step(batch, batch_size)

    # ------------------------------------------------------------------ loop
    def _loop_step(self, batch: Any, batch_size: int) -> StepStats:
        starts = list(range(0, batch_size, self.m))
        params = self._flat_params()
        losses, losses2, gnorms, sizes = [], [], [], []
        finite = torch.ones((), dtype=torch.bool, device=params[0].device)
        for j, start in enumerate(starts):
            size = min(self.m, batch_size - start)
            part = split(batch, start, start + size)
            with self._no_sync():
                loss = self._losses(part, size).mean()
                scaled = self.scaler.scale(loss) if self.scaler is not None else loss
                # autograd.grad keeps the ascent gradient out of .grad, where the descent accumulates.
                pairs = self._group_grads(torch.autograd.grad(scaled, params, allow_unused=True))
            gnorm = self._grad_norm(pairs=pairs)
            finite = finite & torch.isfinite(loss) & torch.isfinite(gnorm)
            self._save_buffers()
            self._perturb(self._perturbation_scale(gnorm), pairs=pairs)
            # DDP: gradients accumulate locally; the last micro-batch's backward all-reduces their sum
            with self._no_sync() if j < len(starts) - 1 else nullcontext():
                loss2 = self._losses(part, size).mean()
                if j == 0:
                    self.zero_grad()  # the descent gradients accumulate in .grad from here on
                self._backward(self._nan_unless(loss2, finite) * (size / batch_size))
            self._restore_weights()
            self._restore_buffers()
            losses.append(loss.detach())
            losses2.append(loss2.detach())
            gnorms.append(gnorm)
            sizes.append(size)
        weights = [s / batch_size for s in sizes]
        return self._stats(torch.stack(losses), torch.stack(losses2), torch.stack(gnorms), weights)

    def _stats(self, losses: Tensor, losses2: Tensor, gnorms: Tensor, weights: list[float] | None = None,
               moved: bool = True) -> StepStats:
        """Average over micro-batches (losses weighted by size), then the guarded base step (``moved``:
        put w and the buffers back first; the vmap backend never moved them)."""
        finite = torch.isfinite(losses).all() & torch.isfinite(losses2).all() & torch.isfinite(gnorms).all()
        if moved:
            skipped = self._restore_and_step(finite)
        else:
            skipped = self._checked_base_step(finite)
        enorms = self._perturbation_scale(gnorms) * gnorms
        if weights is None:
            loss, loss2 = losses.mean(), losses2.mean()
        else:
            # Python floats, not a tensor built on the host: no host-to-device copy on CUDA
            loss = torch.stack([v * w for v, w in zip(losses, weights)]).sum()
            loss2 = torch.stack([v * w for v, w in zip(losses2, weights)]).sum()
        return StepStats(loss, loss2, self._unscaled(gnorms).mean(), enorms.mean(), skipped)

    # ------------------------------------------------------------------ vmap
    def _vmap_step(self, batch: Any, batch_size: int) -> StepStats:
        k, m = batch_size // self.m, self.m
        assert self._per_sample is not None
        module = PerSampleModule(self.model, self._per_sample)
        trainable = {id(p) for p in self._flat_params()}
        named = dict(module.named_parameters())
        train = {name: p for name, p in named.items() if id(p) in trainable}
        frozen = {name: p.detach() for name, p in named.items() if id(p) not in trainable}
        buffers = dict(module.named_buffers())
        xs, in_dims = fold(batch, k)
        amp = self._scale

        def chunk_losses(tp: dict[str, Tensor], bufs: dict[str, Tensor], x: Any) -> Tensor:
            losses = functional_call(module, ({**tp, **frozen}, bufs), (x,))
            if not isinstance(losses, Tensor) or losses.shape != (m,):
                raise ValueError(
                    f"loss_fn must return one loss per sample, shape ({m},) per micro-batch, got "
                    f"{tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__};"
                    " use reduction='none'"
                )
            return losses

        def ascent(tp: dict[str, Tensor], bufs: dict[str, Tensor], x: Any) -> Any:
            mean = chunk_losses(tp, bufs, x).mean()
            return (mean * amp if amp is not None else mean), mean

        def batched(bufs: dict[str, Tensor]) -> dict[str, Tensor]:
            return {name: b.unsqueeze(0).expand(k, *b.shape).clone() for name, b in bufs.items()}

        buf_dim = 0 if buffers else None
        bufs1 = batched(buffers)
        grads, (_, means) = vmap(
            grad_and_value(ascent, has_aux=True),
            in_dims=(None, buf_dim, in_dims),
            randomness="different",
            chunk_size=self.micro_batches_per_call,
        )({name: p.detach() for name, p in train.items()}, bufs1, xs)

        # float32 at least (float64 kept), as in PerturbedOptimizer._grad_norm
        acc = [g.flatten(1).to(torch.promote_types(g.dtype, torch.float32)).pow(2).sum(1)
               for g in grads.values()]
        gnorms = torch.sqrt(torch.stack(acc).sum(0))
        scales = self._perturbation_scale(gnorms)
        perturbed = {
            name: p.unsqueeze(0) + (grads[name] * scales.view(k, *[1] * p.ndim).to(p.dtype))
            for name, p in train.items()
        }
        with torch.no_grad():  # one running-statistics update: the mean of the micro-batch updates
            for name, b in buffers.items():
                b.copy_(bufs1[name].mean(0) if b.is_floating_point() else bufs1[name][0])
        self.zero_grad()
        losses2 = vmap(
            lambda tp, bufs, x: chunk_losses(tp, bufs, x).mean(),
            in_dims=(0, buf_dim, in_dims),
            randomness="different",
            chunk_size=self.micro_batches_per_call,
        )(perturbed, batched(buffers), xs)
        self._backward(losses2.mean())
        return self._stats(means.detach(), losses2.detach(), gnorms, moved=False)
