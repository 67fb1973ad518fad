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
  k micro-batch statistics (what k copies, each updated by one micro-batch, hold once averaged). Memory:
  k copies of the gradients and perturbed weights (``micro_batches_per_call`` bounds it). Dropout draws
  different masks per micro-batch. A batch that m does not divide, and any step under ``torch.autocast``
  (where functorch's batched backward fails on CUDA), runs on the loop backend.
* ``"auto"``: ``"vmap"`` on CUDA, ``"loop"`` on the CPU (where the loop is faster for conv nets),
  under DistributedDataParallel and for a ``torch.compile``d model (vmap would run it eagerly). A model
  vmap cannot run (data-dependent control flow as in most Hugging Face models, activation
  checkpointing) switches it to the loop for good, once, with a warning naming why
  (``vmap_fallback_reason``); a forced ``"vmap"`` raises an error that names ``"loop"``.

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
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm

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

    Book: chapter 1, "Where the perturbation's gradient comes from"; paper: Thms. 3.5-3.8.

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
        self.vmap_fallback_reason: str | None = None
        if self.ddp and backend == "vmap":
            raise ValueError(
                "backend='vmap' does not run under DistributedDataParallel; use 'loop' or 'auto'"
            )

    def resolved_backend(self, device: torch.device) -> str:
        """The backend a step on ``device`` uses. ``"auto"``: vmap on CUDA, the loop elsewhere, under
        DDP, for a ``torch.compile``d model (vmap would run it eagerly) and, from then on, after vmap
        failed on this model once (``vmap_fallback_reason`` says why)."""
        if self.backend != "auto":
            return self.backend
        if self.ddp or self.vmap_fallback_reason is not None or hasattr(self.model, "_orig_mod"):
            return "loop"
        return "vmap" if device.type == "cuda" else "loop"

    def _perturbed_step(self, batch: Any, batch_size: int) -> StepStats:
        device = batch_device(batch)
        # functorch's batched backward fails under autocast (mixed half/float BatchNorm): use the loop
        if (self.resolved_backend(device) != "vmap" or batch_size % self.m
                or torch.is_autocast_enabled(device.type)):
            return self._loop_step(batch, batch_size)
        try:
            return self._vmap_step(batch, batch_size)
        except (RuntimeError, NotImplementedError) as e:
            if not _is_vmap_limitation(e):
                raise
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            if self.backend == "vmap":
                raise RuntimeError(
                    f"MSAM(backend='vmap') cannot run this model under torch.func.vmap ({reason}); "
                    "use backend='loop' (the same arithmetic, one micro-batch after another)"
                ) from e
        # backend="auto": once, say why, and use the loop for this step and every later one
        self.vmap_fallback_reason = reason
        warnings.warn(
            f"MSAM(backend='auto'): torch.func.vmap cannot run this model ({reason}); using "
            "backend='loop' from now on (the same arithmetic). Pass backend='loop' to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
        self._undo_vmap_attempt()
        return self._loop_step(batch, batch_size)

    def _undo_vmap_attempt(self) -> None:
        """Put back what a failed vmap step may have changed (running statistics, random generators)."""
        self._restore_buffers(before_step=True)
        assert self._rng_at_start is not None
        self._rng_at_start.restore()
        self._shared.perturbed = False

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
            if self.ddp:  # carried into the synchronised descent loss; _stats checks everything anyway
                finite = finite & torch.isfinite(loss) & torch.isfinite(gnorm)
            self._save_buffers()
            self._perturb(self._perturbation_scale(gnorm), pairs=pairs)
            # DDP: gradients accumulate locally; the last micro-batch's backward all-reduces their sum
            with self._no_sync() if j < len(starts) - 1 else nullcontext():
                loss2 = self._losses(part, size).mean()
                if j == 0:
                    self._clear_grads()  # the descent gradients accumulate in .grad from here on
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
               moved: bool = True, enorms: Tensor | None = None) -> StepStats:
        """Average over micro-batches (losses weighted by size), then the guarded base step (``moved``:
        put w and the buffers back first; the vmap backend never moved them)."""
        # one check for all: a sum of O(1) losses and norms is finite iff every term is
        finite = torch.isfinite(losses.sum() + losses2.sum() + gnorms.sum())
        if moved:
            skipped = self._restore_and_step(finite)
        else:
            skipped = self._checked_base_step(finite)
        if enorms is None:
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
        """Both passes as one vectorised forward each over the k micro-batches, differentiated by
        autograd outside ``vmap``.

        The k copies of the weights are one ``[k, d]`` matrix per parameter group (each parameter a view
        of it): pass 1 differentiates Σ_j f_{I_j}(W_j) at W_j = w with respect to the ``[k, d]``
        matrix W, whose rows are then the k micro-batch gradients; norms, scales and the perturbed weights
        w + e_j are then one kernel each, whatever the number of parameters. BatchNorm runs without
        batched running statistics; its running statistics get one update from the micro-batch
        statistics pass 1 records (:func:`_update_running_stats`).
        """
        k = batch_size // self.m
        assert self._per_sample is not None
        module = PerSampleModule(self.model, self._per_sample)
        trainable = {id(p) for p in self._flat_params()}
        named = dict(module.named_parameters())
        by_id = {id(p): name for name, p in named.items()}
        # parameters outside the base optimizer: constants in pass 1, differentiated in pass 2
        outside: dict[str, Tensor] = {
            nm: p for nm, p in named.items() if id(p) not in trainable and p.requires_grad}
        const = {nm: p.detach() for nm, p in named.items() if id(p) not in trainable}
        xs, in_dims = fold(batch, k)
        bns = [b for b in self.model.modules() if isinstance(b, _BatchNorm) and b.training
               and b.track_running_stats and b.running_mean is not None and b.running_var is not None]
        stats: list[tuple[Tensor, Tensor]] = []

        def mean_loss(tp: dict[str, Tensor], x: Any, extra: dict[str, Tensor]) -> Any:
            stats.clear()
            losses = functional_call(module, {**const, **extra, **tp}, (x,))
            if not isinstance(losses, Tensor) or losses.shape != (self.m,):
                raise ValueError(
                    f"loss_fn must return one loss per sample, shape ({self.m},) per micro-batch, got "
                    f"{tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__};"
                    " use reduction='none'"
                )
            return (losses.mean(), *_cat_stats(stats)) if stats else losses.mean()

        def batched(flats: list[Tensor]) -> Any:
            with _untracked(bns), _recording(bns if flats is pass1 else [], stats):
                return vmap(lambda tp, x: mean_loss(tp, x, {} if flats is pass1 else outside),
                            in_dims=(0, in_dims), randomness="different",
                            chunk_size=self.micro_batches_per_call)(self._as_params(flats, by_id, k), xs)

        ws = [torch.cat([p.reshape(-1) for p in g.params]) for g in self._groups]
        pass1 = [w.detach().unsqueeze(0).repeat(k, 1).requires_grad_() for w in ws]  # k copies of w
        out = batched(pass1)
        means = out[0] if bns else out
        if bns:
            _update_running_stats(bns, out[1].detach().mean(0), out[2].detach().mean(0))
        total = means.sum() * self._scale if self._scale is not None else means.sum()
        flats = list(torch.autograd.grad(total, pass1))
        norms = [torch.linalg.vector_norm(f, dim=1, dtype=torch.promote_types(f.dtype, torch.float32))
                 .to(ws[0].device) for f in flats]  # float32 at least, as _grad_norm
        gnorms = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms), dim=0)
        scales = self._perturbation_scale(gnorms)
        pass2 = [torch.addcmul(w.unsqueeze(0), f, scales.to(f).unsqueeze(1)) for w, f in zip(ws, flats)]
        self._clear_grads()
        self._shared.perturbed = True
        losses2 = batched(pass2)
        self._backward(losses2.mean())
        self._shared.perturbed = False
        return self._stats(means.detach(), losses2.detach(), gnorms, moved=False, enorms=scales * gnorms)

    def _as_params(self, flats: list[Tensor], by_id: dict[int, str], k: int) -> dict[str, Tensor]:
        """Each trainable parameter as a ``[k, *shape]`` view of its group's ``[k, d]`` matrix."""
        out: dict[str, Tensor] = {}
        for g, flat in zip(self._groups, flats):
            for p, part in zip(g.params, flat.split([p.numel() for p in g.params], dim=1)):
                out[by_id[id(p)]] = part.view(k, *p.shape)
        return out


_VMAP_SIGNS = ("vmap", "functorch", "torch.func", "batching rule", "batched", "saved tensor hooks",
               "setup_context", "data-dependent control flow")


def _is_vmap_limitation(e: BaseException) -> bool:
    """An error torch.func raises for a model it cannot vectorise (not the model's or loss's own error:
    those are re-raised as they are, exact types only, and never out of memory)."""
    text = str(e).lower()
    return type(e) in (RuntimeError, NotImplementedError) and any(s in text for s in _VMAP_SIGNS)


@contextmanager
def _untracked(bns: list[_BatchNorm]) -> Iterator[None]:
    """Train-mode BatchNorm without running statistics (batch statistics, nothing written): vmap then
    needs no batched copies of the buffers."""
    for b in bns:
        b.track_running_stats = False
    try:
        yield
    finally:
        for b in bns:
            b.track_running_stats = True


@contextmanager
def _recording(bns: list[_BatchNorm], stats: list[tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Record each BatchNorm input's per-channel mean and unbiased variance (one kernel per call)."""

    def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        var, mean = torch.var_mean(x, dim=[0, *range(2, x.ndim)], correction=1)
        stats.append((mean, var))

    handles = [b.register_forward_pre_hook(hook) for b in bns]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _cat_stats(stats: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    return torch.cat([m for m, _ in stats]), torch.cat([v for _, v in stats])


def _update_running_stats(bns: list[_BatchNorm], mean: Tensor, var: Tensor) -> None:
    """One running-statistics update per BatchNorm with the mean over micro-batches of their batch
    mean and unbiased variance: what k copies updated by one micro-batch each and then averaged hold."""
    sizes = [b.num_features for b in bns]
    with torch.no_grad():
        means, variances = mean.split(sizes), var.split(sizes)
        counters = [b.num_batches_tracked for b in bns if b.num_batches_tracked is not None]
        if counters:
            torch._foreach_add_(counters, 1)
        by_momentum: dict[float, tuple[list[Tensor], list[Tensor]]] = {}
        for b, m, v in zip(bns, means, variances):
            assert b.running_mean is not None and b.running_var is not None
            if b.momentum is None:  # cumulative moving average
                assert b.num_batches_tracked is not None
                f = 1.0 / b.num_batches_tracked.to(m.dtype)
                b.running_mean.lerp_(m.to(b.running_mean), f)
                b.running_var.lerp_(v.to(b.running_var), f)
                continue
            targets, sources = by_momentum.setdefault(float(b.momentum), ([], []))
            targets += [b.running_mean, b.running_var]
            sources += [m.to(b.running_mean), v.to(b.running_var)]
        for momentum, (targets, sources) in by_momentum.items():
            torch._foreach_lerp_(targets, sources, momentum)
