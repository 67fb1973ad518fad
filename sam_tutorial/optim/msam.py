"""m-SAM and m-USAM: one perturbation per micro-batch of size m (paper §2.4).

Algorithm, one step on a batch γ of size B split into k = B/m disjoint micro-batches I_1..I_k:

.. code-block:: text

    for j = 1..k:
        g_j = ∇f_{I_j}(w)                         # pass 1 on micro-batch j
        e_j = ρ g_j/‖g_j‖  (m-SAM)   e_j = ρ g_j  (m-USAM, normalize=False)
    G = (1/k) Σ_j ∇f_{I_j}(w + e_j)               # pass 2, each micro-batch at its own point
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
  k copies of the gradients and perturbed weights (``vmap_chunk_size`` bounds it). Dropout draws
  different masks per micro-batch.
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

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from sam_tutorial.optim.base import (
    Inputs,
    LossFn,
    PerturbedOptimizer,
    StepStats,
    Targets,
    as_tuple,
)

BACKENDS = ("auto", "loop", "vmap")


def _split(x: Inputs, k: int, j: int) -> Inputs:
    m = as_tuple(x)[0].shape[0] // k
    parts = tuple(t[j * m : (j + 1) * m] for t in as_tuple(x))
    return parts if isinstance(x, tuple) else parts[0]


def _fold(x: Inputs, k: int) -> Inputs:
    parts = tuple(t.reshape(k, t.shape[0] // k, *t.shape[1:]) for t in as_tuple(x))
    return parts if isinstance(x, tuple) else parts[0]


class MSAM(PerturbedOptimizer):
    """Micro-batch SAM: each micro-batch of ``m`` samples is perturbed with its own gradient.

    Args:
        model: the module to train.
        base: any ``torch.optim.Optimizer`` instance over the model's parameters.
        rho: radius ρ >= 0.
        m: micro-batch size; must divide every batch passed to ``step``.
        normalize: m-SAM (``True``) or m-USAM (``False``).
        backend: ``"loop"``, ``"vmap"`` or ``"auto"`` (see the module docstring).
        vmap_chunk_size: micro-batches per vectorised call (``None``: all k at once).
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
        m: int,
        normalize: bool = True,
        backend: str = "auto",
        vmap_chunk_size: int | None = None,
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
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"m must be an integer >= 1 (the micro-batch size), got {m!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        if vmap_chunk_size is not None and (
            not isinstance(vmap_chunk_size, int) or vmap_chunk_size < 1
        ):
            raise ValueError(f"vmap_chunk_size must be an integer >= 1 or None, got {vmap_chunk_size!r}")
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
        self.m = m
        self.backend = backend
        self.vmap_chunk_size = vmap_chunk_size

    def resolved_backend(self, device: torch.device) -> str:
        """The backend a step on ``device`` uses (``"auto"``: vmap on CUDA, loop elsewhere)."""
        if self.backend != "auto":
            return self.backend
        return "vmap" if device.type == "cuda" and not self.ddp else "loop"

    def _check_batch(self, n: int) -> None:
        if n % self.m:
            raise ValueError(
                f"m={self.m} must divide the batch size; got a batch of {n} samples "
                f"(accepted: batch sizes that are multiples of m)"
            )

    def _perturbed_step(
        self, inputs: Inputs, targets: Targets, loss_fn: LossFn, n: int
    ) -> StepStats:
        device = as_tuple(inputs)[0].device
        if self.resolved_backend(device) == "vmap":
            return self._vmap_step(inputs, targets, loss_fn, n)
        return self._loop_step(inputs, targets, loss_fn, n)

    # ------------------------------------------------------------------ loop
    def _loop_step(self, inputs: Inputs, targets: Targets, loss_fn: LossFn, n: int) -> StepStats:
        k = n // self.m
        params = self.flat_params()
        self.save_weights()
        losses, losses2, gnorms = [], [], []
        ok = torch.ones((), dtype=torch.bool, device=as_tuple(inputs)[0].device)
        for j in range(k):
            xj, yj = _split(inputs, k, j), _split(targets, k, j)
            with self.no_sync():
                loss = self.forward_losses(xj, yj, loss_fn, self.m).mean()
                scaled = self.scaler.scale(loss) if self.scaler is not None else loss
                # autograd.grad keeps the ascent gradient out of .grad, where the descent accumulates.
                pairs = self.pair_up(torch.autograd.grad(scaled, params, allow_unused=True))
            gnorm = self.grad_norm(pairs=pairs)
            ok = ok & torch.isfinite(loss) & torch.isfinite(gnorm)
            self.save_buffers()
            self.perturb(self.perturbation_scale(gnorm), pairs=pairs)
            # DDP: gradients accumulate locally; the last micro-batch's backward all-reduces their sum
            with self.no_sync() if j < k - 1 else nullcontext():
                loss2 = self.forward_losses(xj, yj, loss_fn, self.m).mean()
                if j == 0:
                    self.zero_grad()  # the descent gradients accumulate in .grad from here on
                self.backward(self.poison_unless(loss2, ok) / k)
            self.restore_weights()
            self.restore_buffers()
            losses.append(loss.detach())
            losses2.append(loss2.detach())
            gnorms.append(gnorm)
        return self._stats(torch.stack(losses), torch.stack(losses2), torch.stack(gnorms))

    def _stats(self, losses: Tensor, losses2: Tensor, gnorms: Tensor, restore: bool = True) -> StepStats:
        """Average over micro-batches, then the guarded base step (``restore``: put w and the
        buffers back first; the vmap backend never moved them)."""
        ok = torch.isfinite(losses).all() & torch.isfinite(losses2).all()
        ok = ok & torch.isfinite(gnorms).all()
        if restore:
            skipped = self.finish(ok)
        else:
            skipped = self.base_step(ok & torch.isfinite(self.grad_norm()))
        enorms = self.perturbation_scale(gnorms) * gnorms
        return StepStats(
            losses.mean(), losses2.mean(), self.unscaled(gnorms).mean(), enorms.mean(), skipped
        )

    # ------------------------------------------------------------------ vmap
    def _vmap_step(self, inputs: Inputs, targets: Targets, loss_fn: LossFn, n: int) -> StepStats:
        k, m = n // self.m, self.m
        trainable = {id(p) for p in self.flat_params()}
        named = dict(self.model.named_parameters())
        train = {name: p for name, p in named.items() if id(p) in trainable}
        frozen = {name: p.detach() for name, p in named.items() if id(p) not in trainable}
        buffers = dict(self.model.named_buffers())
        xs, ys = _fold(inputs, k), _fold(targets, k)
        # scaler.scale() creates the scale on first use (the private getter would return None then)
        amp = None
        if self.scaler is not None:
            amp = self.scaler.scale(torch.ones((), device=as_tuple(inputs)[0].device))

        def chunk_losses(tp: dict[str, Tensor], bufs: dict[str, Tensor], x: Any, y: Any) -> Tensor:
            out = functional_call(self.model, ({**tp, **frozen}, bufs), as_tuple(x))
            losses = loss_fn(out, y)
            if not isinstance(losses, Tensor) or losses.shape != (m,):
                raise ValueError(
                    f"loss_fn must return one loss per sample, shape ({m},) per micro-batch, got "
                    f"{tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__};"
                    " use reduction='none'"
                )
            return losses

        def ascent(tp: dict[str, Tensor], bufs: dict[str, Tensor], x: Any, y: Any) -> Any:
            mean = chunk_losses(tp, bufs, x, y).mean()
            return (mean * amp if amp is not None else mean), mean

        def batched(bufs: dict[str, Tensor]) -> dict[str, Tensor]:
            return {name: b.unsqueeze(0).expand(k, *b.shape).clone() for name, b in bufs.items()}

        buf_dim = 0 if buffers else None
        bufs1 = batched(buffers)
        grads, (_, means) = vmap(
            grad_and_value(ascent, has_aux=True),
            in_dims=(None, buf_dim, 0, 0),
            randomness="different",
            chunk_size=self.vmap_chunk_size,
        )({name: p.detach() for name, p in train.items()}, bufs1, xs, ys)

        # float32 at least (float64 kept), as in PerturbedOptimizer.grad_norm
        sq = sum(
            g.flatten(1).to(torch.promote_types(g.dtype, torch.float32)).pow(2).sum(1)
            for g in grads.values()
        )
        gnorms = torch.sqrt(sq)  # type: ignore[arg-type]
        scales = self.perturbation_scale(gnorms)
        perturbed = {
            name: p.unsqueeze(0) + (grads[name] * scales.view(k, *[1] * p.ndim).to(p.dtype))
            for name, p in train.items()
        }
        with torch.no_grad():  # one running-statistics update: the mean of the micro-batch updates
            for name, b in buffers.items():
                b.copy_(bufs1[name].mean(0) if b.is_floating_point() else bufs1[name][0])
        self.zero_grad()
        losses2 = vmap(
            lambda tp, bufs, x, y: chunk_losses(tp, bufs, x, y).mean(),
            in_dims=(0, buf_dim, 0, 0),
            randomness="different",
            chunk_size=self.vmap_chunk_size,
        )(perturbed, batched(buffers), xs, ys)
        self.backward(losses2.mean())
        self.save_weights()  # the weights never moved; the guarded base step needs their copy
        return self._stats(means.detach(), losses2.detach(), gnorms, restore=False)
