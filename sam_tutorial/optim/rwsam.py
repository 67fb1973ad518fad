"""Reweighted SAM (RW-SAM): one parallel perturbation from a Gibbs-reweighted batch (paper §5).

m-SAM with small m strengthens the variance penalty ρ/(2m)·tr V but runs its micro-batches one after
another. RW-SAM keeps one batched perturbation and instead up-weights the samples whose gradients are
large, solving (paper §5.2, relaxed with ‖Σ p_i ∇f_i‖ <= Σ p_i ‖∇f_i‖)

    max_{p ∈ Δ_B}  Σ_i p_i ‖∇f_i(w)‖ + (1/λ) H(p)   ⇒   p_i = exp(λ‖∇f_i‖) / Σ_j exp(λ‖∇f_j‖),

with the per-sample gradient norms estimated along one random probe z shared by the batch:
``|zᵀ∇f_i(w)|`` (for z Rademacher, ``E|zᵀg|`` ≈ sqrt(2/π)‖g‖, a common factor that λ absorbs).

Algorithm, one step on a batch γ of size B (``score="finite-difference"``, the paper's estimator):

.. code-block:: text

    u    = z / ‖z‖                         # z Rademacher by default (entries ±1, ‖z‖ = √d)
    ℓ⁺_i = f_i(w + δ u)                    # the one extra forward (no grad); ‖δu‖ = δ, the probe radius
    ℓ_i  = f_i(w)                          # pass 1 forward (per-sample losses), same dropout masks
    ĝ_i  = ‖z‖ |ℓ⁺_i − ℓ_i| / δ             # ≈ |zᵀ∇f_i(w)|
    p    = softmax(λ ĝ)                    # Gibbs weights, detached
    g_P  = ∇ Σ_i p_i ℓ_i                   # pass 1 backward on the reweighted loss
    e    = ρ g_P/‖g_P‖   (USAM form: ρ g_P)
    g'   = ∇ f_γ(w + e)                    # pass 2: uniform mean (weighted_descent=True: Σ p_i ℓ_i)
    w    = base_step(w, g')

Cost 3 forward + 2 backward passes, about 1/6 more than SAM. ``lam = 0`` gives uniform weights, i.e.
SAM. ``delta`` is the radius of the probe, so one value (default 0.01, well inside the first-order
regime for ρ ~ 0.05) fits any model size; the score is rescaled by ‖z‖ so λ keeps its meaning too.
The probe forward and pass 1 draw the same dropout masks (the random generators are rewound); under
autocast the finite difference is taken between two float32 forwards (one forward more), because a
bfloat16 loss cannot resolve a difference of order δ‖∇f_i‖/√d.

``score="exact"`` (beyond the paper): the directional derivative zᵀ∇f_i(w) computed exactly by
forward-mode AD, in pass 1 itself (one dual forward replaces the probe forward): no δ, no cancellation,
no precision loss (under autocast it is one float32 dual forward without a graph, beside pass 1).

``score="norm"`` (a diagnostic beyond the paper): the exact per-sample gradient norms, scaled like the
probe's scores, √(2/π)‖∇f_i(w)‖ (the large-d mean of ``|zᵀ∇f_i|``; divided by √d with
``normalize_probe``): RW-SAM without the noise of one projection, at the price of per-sample gradients
(``torch.func.vmap`` over the samples, each a batch of one, in float32 before pass 1; no probe is drawn).
A sample's gradient is taken alone, so a model with BatchNorm in training mode is refused.

Under DistributedDataParallel, ``scope="local"`` (default) computes the weights over each rank's
own batch; ``scope="global"`` over the global batch (the scores are all-gathered: B floats per rank);
give every rank the same ``seed`` so that all ranks use the same probe. The probe is drawn before
pass 1 (so the weights move only while no autograd graph holds them) and never touches BatchNorm
running statistics.

Choices the paper leaves UNCONFIRMED are options, with these defaults: the descent pass is uniform
(``weighted_descent=False``); one probe (``n_probes=1``); ``z`` Rademacher with entries ±1 and the
score ``|zᵀ∇f_i|`` (``normalize_probe=True``: ``|uᵀ∇f_i|`` with ‖u‖ = 1); the score is used as is
(``transform="abs"``; ``"square"`` uses its square); no standardisation of the scores before the
softmax (``standardize=False``); no mixing with uniform weights (``mix=0``).

References:
    Luo, Harandi, Phung, Le. Unveiling m-Sharpness Through the Structure of Stochastic Gradient Noise.
    NeurIPS 2025, §5 (Gibbs weights, finite-difference estimator).

Example:
    >>> import torch
    >>> from sam_tutorial.optim import RWSAM
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, lam=1.0, seed=0)
    >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    >>> stats = opt.step(x, y, torch.nn.CrossEntropyLoss(reduction="none"))
    >>> opt.last_weights.shape, round(float(opt.last_weights.sum()), 6)
    (torch.Size([8]), 1.0)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from sam_tutorial.optim._state import generator_states
from sam_tutorial.optim._util import (
    PerSampleModule,
    batch_device,
    check_choice,
    check_int,
    check_real,
    fold,
    weights_changed,
)
from sam_tutorial.optim.base import PerturbedOptimizer, StepStats

__all__ = ["PROBES", "RWSAM", "SCORES", "SQRT_2_OVER_PI", "TRANSFORMS", "gibbs_weights"]

PROBES = ("rademacher", "gaussian")
SCORES = ("finite-difference", "exact", "norm")
TRANSFORMS = ("abs", "square")
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
"""The scale of ``score="norm"``, E|zᵀg| / ‖g‖ for a Rademacher or Gaussian probe z in high dimension."""


_FORWARD_AD_ERRORS = ("RuntimeError", "NotImplementedError", "CheckpointError")
"""Exact error types torch raises when forward-mode AD cannot pass (subclasses such as out of memory,
or the model's own errors, propagate unchanged)."""


def gibbs_weights(scores: Tensor, lam: float) -> Tensor:
    """Gibbs weights p_i = exp(λ a_i) / Σ_j exp(λ a_j) over the last dimension.

    Book: chapter 5, "From m-SAM's cost to reweighting"; paper: §5 (claim C8).

    They solve max_{p ∈ Δ} ⟨p, a⟩ + H(p)/λ (entropy-regularised maximum; paper §5.2). λ = 0 gives the
    uniform distribution, λ → ∞ all weight on the largest score. Computed in float32 (or float64).

    >>> gibbs_weights(torch.tensor([0.0, 1.0]), 0.0)
    tensor([0.5000, 0.5000])
    """
    lam = check_real("lam", lam)
    dtype = scores.dtype if scores.dtype == torch.float64 else torch.float32
    return torch.softmax(scores.to(dtype) * lam, dim=-1)


def _at_least_fp32(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


class RWSAM(PerturbedOptimizer):
    """Reweighted SAM: SAM whose perturbation comes from a Gibbs-reweighted batch gradient.

    Book: chapter 5, "From m-SAM's cost to reweighting"; paper: §5.

    Args:
        model: the module to train.
        base: any ``torch.optim.Optimizer`` instance over the model's parameters.
        rho: radius ρ >= 0.
        lam: inverse temperature λ >= 0 of the Gibbs weights (``0``: SAM).
        delta: the probe radius ‖w⁺ − w‖ of the finite difference, a finite number > 0. It is a
            radius, not a per-coordinate step, so the default 0.01 is valid for any model size (the
            paper's δ and its scaling are UNCONFIRMED; book/sources.md).
            Unused with ``score="exact"`` or ``"norm"``.
        score: one of ``SCORES``: ``"finite-difference"`` (default, the paper's: one extra forward
            at w + δu), ``"exact"`` (zᵀ∇f_i by forward-mode AD inside pass 1; no δ, immune to low
            precision) or ``"norm"`` (√(2/π)‖∇f_i‖ from exact per-sample gradients; no probe).
        transform: ``"abs"`` for ``|zᵀ∇f_i|`` (default) or ``"square"`` for its square.
        normalize: RW-SAM (``True``) or its unnormalised form (``False``).
        weighted_descent: use the weights p in pass 2 too (default: uniform; UNCONFIRMED).
        probe: ``"rademacher"`` (default; least variance) or ``"gaussian"``.
        normalize_probe: score along the unit vector u = z/‖z‖ (default ``False``: along z itself).
        n_probes: probes averaged per step (each one more forward; default 1).
        standardize: standardise the scores over the batch before the softmax.
        mix: weight of the uniform distribution mixed into p, a number in [0, 1].
        seed: integer seed of the probe generator (default: drawn from torch's global generator).
        scaler: optional ``torch.amp.GradScaler`` (float16).
        skip_nonfinite: skip the whole step on a non-finite loss or gradient.
        scope: under ``DistributedDataParallel``, ``"local"`` (default) or ``"global"``; see
            ``sam_tutorial.optim.base`` (ignored for a model that is not DDP-wrapped).
        max_grad_norm: clip the descent gradient to this norm before the base step (``None``: no).

    After each step, ``last_weights`` holds p and ``last_scores`` the scores (device tensors); the
    step's :class:`~sam_tutorial.optim.base.StepStats` carries p as ``weights``.
    ``state_dict`` includes the probe generator's state, so a resumed run draws the same probes as an
    uninterrupted one; a step that raises does not advance it.
    """

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        rho: float,
        lam: float,
        delta: float = 0.01,
        score: str = "finite-difference",
        transform: str = "abs",
        normalize: bool = True,
        weighted_descent: bool = False,
        probe: str = "rademacher",
        normalize_probe: bool = False,
        n_probes: int = 1,
        standardize: bool = False,
        mix: float = 0.0,
        seed: int | None = None,
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
        self.lam = check_real("lam", lam)
        self.delta = check_real("delta", delta, strict=True)
        self.score = check_choice("score", score, SCORES)
        self.transform = check_choice("transform", transform, TRANSFORMS)
        self.probe = check_choice("probe", probe, PROBES)
        self.n_probes = check_int("n_probes", n_probes)
        self.mix = check_real("mix", mix, high=1.0)
        if seed is None:  # from torch's global generator, without advancing it (a swap SAM -> RW-SAM
            # must not change the data order or the dropout masks of the rest of the program)
            rng = torch.get_rng_state()
            seed = int(torch.randint(0, 2**62, (1,)).item())
            torch.set_rng_state(rng)
        self.seed = check_int("seed", seed, low=0)
        if self.ddp and self.score != "finite-difference":
            raise ValueError(
                f"score={self.score!r} does not run under DistributedDataParallel; use 'finite-difference'"
            )
        self.weighted_descent = bool(weighted_descent)
        self.normalize_probe = bool(normalize_probe)
        self.standardize = bool(standardize)
        self._generators: dict[torch.device, torch.Generator] = {}
        self._z: list[tuple[Tensor, list[Tensor]]] = []
        self._z_for: list[Any] | None = None
        self._checked_resolution = False
        self.last_weights: Tensor | None = None
        self.last_scores: Tensor | None = None

    # ------------------------------------------------------------------ probe
    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def _draw_probe(self) -> tuple[float, Tensor | float]:
        """Fill one flat buffer per parameter group with a fresh direction v: z itself (Rademacher,
        ‖v‖ = √d) or z/‖z‖ (Gaussian). Returns ‖v‖ and the factor that turns vᵀ∇f_i into the score's
        scale (``|zᵀ∇f_i|``, or ``|uᵀ∇f_i|`` with ``normalize_probe``)."""
        groups = self._groups
        if self._z_for is not groups:  # a new list only when the parameters change
            self._z_for = groups
            self._z = []
            for g in groups:
                flat = torch.empty(sum(p.numel() for p in g.params), device=g.params[0].device,
                                   dtype=g.params[0].dtype)
                views, i = [], 0
                for p in g.params:
                    views.append(flat[i : i + p.numel()].view_as(p))
                    i += p.numel()
                self._z.append((flat, views))
        for flat, _ in self._z:
            gen = self._generator(flat.device)
            if self.probe == "rademacher":
                flat.random_(0, 2, generator=gen).mul_(2).sub_(1)  # 4x faster than bernoulli_
            else:
                flat.normal_(generator=gen)
        if self.probe == "rademacher":
            root_d = math.sqrt(sum(f.numel() for f, _ in self._z))
            return root_d, 1.0 / root_d if self.normalize_probe else 1.0
        device = self._z[0][0].device
        norm = torch.linalg.vector_norm(torch.stack([
            torch.linalg.vector_norm(f, dtype=torch.promote_types(f.dtype, torch.float32)).to(device)
            for f, _ in self._z
        ]))
        for flat, _ in self._z:
            flat.div_(norm.to(flat.device))
        return 1.0, 1.0 if self.normalize_probe else norm

    def _probe_losses(self, batch: Any, batch_size: int, step: float) -> Tensor:
        """Per-sample losses at w + step·v (no grad), with the step's dropout masks; weights and
        buffers are exactly as before when this returns."""
        with torch.no_grad():
            for g, (_, views) in zip(self._groups, self._z):
                torch._foreach_add_(g.params, views, alpha=step)
            weights_changed()
            try:
                return self._fp32_losses(batch, batch_size)
            finally:
                self._restore_weights()
                self._restore_buffers(before_step=True)

    def _fp32_losses(self, batch: Any, batch_size: int) -> Tensor:
        """Losses without grad from the step's starting random state; float32 under autocast."""
        assert self._rng_at_start is not None
        self._rng_at_start.restore()
        device_type = batch_device(batch).type
        # inference mode: about 10 % cheaper than no_grad on the CPU (no version counters, no views kept)
        with torch.inference_mode(), torch.autocast(device_type, enabled=False):
            return _at_least_fp32(self._losses(batch, batch_size))

    def _dual_losses(self, batch: Any, batch_size: int) -> tuple[Tensor, Tensor]:
        """Per-sample losses at w and their directional derivatives vᵀ∇f_i, in one dual forward (on the
        eager module behind a ``torch.compile``d one: compiled graphs carry no forward-mode AD)."""
        with self._forward_ad_errors():
            return self._dual_forward(batch, batch_size)

    @contextmanager
    def _forward_ad_errors(self) -> Iterator[None]:
        """Turn torch's errors about forward-mode AD (raised in the dual forward or, with activation
        checkpointing, when pass 1's backward recomputes it) into one that says what to use instead."""
        try:
            yield
        except (RuntimeError, NotImplementedError) as e:
            if self.score != "exact" or type(e).__name__ not in _FORWARD_AD_ERRORS:
                raise
            raise RuntimeError(
                "RWSAM(score='exact') needs forward-mode AD through the model, which failed here "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Activation "
                "checkpointing (torch.utils.checkpoint) and custom autograd Functions without a jvp do not "
                "support it; use score='finite-difference' (the paper's estimator)"
            ) from e

    def _dual_forward(self, batch: Any, batch_size: int) -> tuple[Tensor, Tensor]:
        assert self._per_sample is not None
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile's OptimizedModule
        module = PerSampleModule(model, self._per_sample)
        tangent = {id(p): v for g, (_, views) in zip(self._groups, self._z) for p, v in zip(g.params, views)}
        with fwAD.dual_level(), warnings.catch_warnings():
            # torch registers its forward-AD decompositions with torch.jit.script on first use
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
            duals = {name: fwAD.make_dual(p, tangent[id(p)]) for name, p in module.named_parameters()
                     if id(p) in tangent}
            out = functional_call(module, duals, (batch,), strict=False)
            if not isinstance(out, Tensor) or out.shape != (batch_size,):
                raise ValueError(
                    f"loss_fn must return one loss per sample, shape ({batch_size},); use reduction='none'"
                )
            losses, derivative = fwAD.unpack_dual(out)
        if derivative is None:
            raise ValueError("score='exact': the losses do not depend on the trainable parameters")
        return losses, _at_least_fp32(derivative.detach())

    def _pass1_and_scores(self, batch: Any, batch_size: int) -> tuple[Tensor, Tensor]:
        """Pass 1's per-sample losses (with a graph) and the scores [batch_size], every probe forward
        drawing the same dropout masks as pass 1 and leaving weights and buffers as they were."""
        assert self._rng_at_start is not None
        if self.score == "norm":
            norms = self._norm_scores(batch, batch_size)
            self._rng_at_start.restore()  # pass 1 draws the dropout masks it would draw without the score
            return self._losses(batch, batch_size), norms if self.transform == "abs" else norms.square()
        device_type = batch_device(batch).type
        autocast = torch.is_autocast_enabled(device_type)
        rows: list[Tensor] = []
        losses: Tensor | None = None
        plus: list[tuple[Tensor, float, Tensor | float]] = []
        for j in range(self.n_probes):
            root, factor = self._draw_probe()
            if self.score == "finite-difference":
                plus.append((self._probe_losses(batch, batch_size, self.delta / root), root, factor))
            elif j == 0 and not autocast:  # the dual forward is pass 1
                self._rng_at_start.restore()
                losses, d = self._dual_losses(batch, batch_size)
                rows.append(d * factor)
            else:  # one float32 dual forward without a graph
                self._rng_at_start.restore()
                with torch.no_grad(), torch.autocast(device_type, enabled=False):
                    rows.append(self._dual_losses(batch, batch_size)[1] * factor)
                self._restore_buffers(before_step=True)
        reference = None
        if plus and autocast:  # a bfloat16 loss cannot resolve the difference: both ends in float32
            reference = self._fp32_losses(batch, batch_size)
            self._restore_buffers(before_step=True)
        if losses is None:
            self._rng_at_start.restore()  # pass 1 draws the probe's dropout masks
            losses = self._losses(batch, batch_size)
        if plus:
            ref = reference if reference is not None else _at_least_fp32(losses.detach())
            self._check_resolution(plus[0][0], ref)
            rows = [(up - ref) * (root / self.delta) * factor for up, root, factor in plus]
        scores = torch.stack([r.abs() if self.transform == "abs" else r.square() for r in rows]).mean(0)
        return losses, scores

    def _norm_scores(self, batch: Any, batch_size: int) -> Tensor:
        """√(2/π)‖∇f_i(w)‖ (divided by √d with ``normalize_probe``) for every sample, from exact
        per-sample gradients in float32; weights, buffers and ``.grad`` are left as they are."""
        assert self._per_sample is not None
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in self.model.modules()):
            raise ValueError("score='norm' takes each sample's gradient alone, which BatchNorm in training "
                             "mode cannot normalise; use score='exact' or 'finite-difference'")
        module = PerSampleModule(self.model, self._per_sample)
        trainable = {id(p) for p in self._flat_params()}
        named = dict(module.named_parameters())
        train = {k: p.detach() for k, p in named.items() if id(p) in trainable}
        frozen = {k: p.detach() for k, p in named.items() if id(p) not in trainable}
        buffers = {k: b.detach().clone() for k, b in module.named_buffers()}
        xs, in_dims = fold(batch, batch_size)

        def loss(tp: dict[str, Tensor], x: Any) -> Tensor:
            return functional_call(module, ({**tp, **frozen}, buffers), (x,)).sum()

        with torch.autocast(batch_device(batch).type, enabled=False):
            grads = vmap(grad(loss), in_dims=(None, in_dims), randomness="different")(train, xs)
        sq = torch.stack([_at_least_fp32(g).flatten(1).square().sum(1) for g in grads.values()]).sum(0)
        d = sum(p.numel() for p in train.values())
        return sq.sqrt() * (SQRT_2_OVER_PI / (math.sqrt(d) if self.normalize_probe else 1.0))

    def _check_resolution(self, plus: Tensor, reference: Tensor) -> None:
        """Once: warn if the probe moved no loss at all (delta below the losses' resolution)."""
        if self._checked_resolution:
            return
        self._checked_resolution = True  # one host synchronisation, on the first step only
        if bool((plus == reference).all()):
            warnings.warn(
                f"RWSAM: delta={self.delta:g} changes no per-sample loss at all in {plus.dtype}: every score "
                "is 0 and the step is plain SAM. Use a larger delta or score='exact'.",
                RuntimeWarning,
                stacklevel=4,
            )

    def _weights_from_scores(self, scores: Tensor) -> Tensor:
        """Gibbs weights p = softmax(λ·scores) (standardised, mixed with uniform as configured)."""
        if self.standardize:
            scores = (scores - scores.mean()) / (scores.std(correction=0) + 1e-12)
        p = gibbs_weights(scores, self.lam)
        if self.mix:
            p = (1 - self.mix) * p + self.mix / p.numel()
        return p

    # ------------------------------------------------------------------ step
    def _perturbed_step(self, batch: Any, batch_size: int) -> StepStats:
        with self._ascent_context():
            losses, scores = self._pass1_and_scores(batch, batch_size)
            self.last_scores = scores
            self._clear_grads()
            if self.scope == "global":
                p, factor = self._global_weights(scores)
            else:
                p, factor = self._weights_from_scores(scores).detach(), 1.0
            self.last_weights = p
            with self._forward_ad_errors():  # checkpointing recomputes the dual forward here
                pairs = self._ascent_grads((p.to(losses.dtype) * losses).sum() * factor)
        self._save_buffers()
        gnorm, enorm = self._ascend(pairs=pairs)
        self._clear_grads()
        losses2 = self._losses(batch, batch_size)
        loss2 = losses2.mean()
        loss = losses.detach().mean()
        finite = torch.isfinite(loss) & torch.isfinite(gnorm) & torch.isfinite(scores).all()
        descent = (p.to(losses2.dtype) * losses2).sum() * factor if self.weighted_descent else loss2
        self._backward(self._nan_unless(descent, finite))
        skipped = self._restore_and_step(finite & torch.isfinite(loss2))
        return StepStats(loss, loss2.detach(), self._unscaled(gnorm), enorm, skipped, p)

    def _global_weights(self, scores: Tensor) -> tuple[Tensor, float]:
        """Gibbs weights over the global batch (DDP, ``scope="global"``): this rank's slice, and the
        factor that undoes DDP's averaging over ranks so the all-reduced gradient is Σ_all p_i ∇f_i."""
        import torch.distributed as dist

        world, rank = dist.get_world_size(), dist.get_rank()
        gathered = [torch.empty_like(scores) for _ in range(world)]
        dist.all_gather(gathered, scores.contiguous())
        p = self._weights_from_scores(torch.cat(gathered)).detach()
        b = scores.numel()
        return p[rank * b : (rank + 1) * b], float(world)

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "probe_rng": {str(d): g.get_state() for d, g in self._generators.items()},
        }

    def _check_extra_state(self, state: Any) -> None:
        super()._check_extra_state(state)
        generator_states(state.get("probe_rng", {}), self._param_devices())
        check_int("state_dict['sam']['seed']", state.get("seed", self.seed), low=0)

    def _param_devices(self) -> list[torch.device]:
        return sorted({p.device for g in self.param_groups for p in g["params"]}, key=str)

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Set the probe generators (checked by ``_check_extra_state``: this cannot fail half-way)."""
        states = generator_states(state.get("probe_rng", {}), self._param_devices())
        self.seed = int(state.get("seed", self.seed))
        self._generators = {}
        for dev, rng in states.items():
            self._generator(dev).set_state(rng)
