"""Reweighted SAM (RW-SAM): one parallel perturbation from a Gibbs-reweighted batch (paper §5).

m-SAM with small m strengthens the variance penalty ρ/(2m)·tr V but runs its micro-batches one after
another. RW-SAM keeps one batched perturbation and instead up-weights the samples whose gradients are
large, solving (paper §5.2, relaxed with ‖Σ p_i ∇f_i‖ <= Σ p_i ‖∇f_i‖)

    max_{p ∈ Δ_B}  Σ_i p_i ‖∇f_i(w)‖ + (1/λ) H(p)   ⇒   p_i = exp(λ‖∇f_i‖) / Σ_j exp(λ‖∇f_j‖),

with the per-sample gradient norms estimated by one finite difference along a random probe z.

Algorithm, one step on a batch γ of size B:

.. code-block:: text

    ℓ⁺_i = f_i(w + δ z)                  # the one extra forward (no grad); z Rademacher by default
    ℓ_i  = f_i(w)                        # pass 1 forward (per-sample losses)
    ĝ_i  = |ℓ⁺_i − ℓ_i| / δ               # finite-difference estimate of ‖∇f_i(w)‖ (up to a common
                                         #   factor ≈ sqrt(2/π), which λ absorbs)
    p    = softmax(λ ĝ)                  # Gibbs weights, detached
    g_P  = ∇ Σ_i p_i ℓ_i                 # pass 1 backward on the reweighted loss
    e    = ρ g_P/‖g_P‖   (USAM form: ρ g_P)
    g'   = ∇ f_γ(w + e)                  # pass 2: uniform mean (weighted_descent=True: Σ p_i ℓ_i)
    w    = base_step(w, g')

Cost 3 forward + 2 backward passes, about 1/6 more than SAM. ``lam = 0`` gives uniform weights, i.e.
SAM. Under DistributedDataParallel, ``scope="local"`` (default) computes the weights over each rank's
own batch; ``scope="global"`` over the global batch (the scores are all-gathered: B floats per rank);
give every rank the same ``seed`` so that all ranks use the same probe. The probe is drawn before
pass 1 (so the weights move only while no autograd graph holds them) and never touches BatchNorm
running statistics.

Choices the paper leaves UNCONFIRMED are options, with these defaults: the descent pass is uniform
(``weighted_descent=False``); one probe (``n_probes=1``); ``z`` Rademacher with entries ±1, not
rescaled (``normalize_probe=False``; with ``True``, ‖z‖ = 1 so ‖δz‖ = δ); the score is abs(Δℓ)/δ
(``score="abs"``; ``"square"`` uses (Δℓ/δ)²); no standardisation of the scores before the softmax
(``standardize=False``); no mixing with uniform weights (``mix=0``).

References:
    Luo, Harandi, Phung, Le. Unveiling m-Sharpness Through the Structure of Stochastic Gradient Noise.
    NeurIPS 2025, §5 (Gibbs weights, finite-difference estimator).

Example:
    >>> import torch
    >>> from sam_tutorial.optim import RWSAM
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, lam=1.0,
    ...             delta=1e-3, seed=0)
    >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    >>> stats = opt.step(x, y, torch.nn.CrossEntropyLoss(reduction="none"))
    >>> opt.last_weights.shape, round(float(opt.last_weights.sum()), 6)
    (torch.Size([8]), 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from sam_tutorial.optim.base import (
    Inputs,
    LossFn,
    PerturbedOptimizer,
    StepStats,
    Targets,
    weights_changed,
)

PROBES = ("rademacher", "gaussian")
SCORES = ("abs", "square")


def gibbs_weights(scores: Tensor, lam: float) -> Tensor:
    """Gibbs weights p_i = exp(λ a_i) / Σ_j exp(λ a_j) over the last dimension.

    They solve max_{p ∈ Δ} ⟨p, a⟩ + H(p)/λ (entropy-regularised maximum; paper §5.2). λ = 0 gives the
    uniform distribution, λ → ∞ all weight on the largest score. Computed in float32 (or float64).

    >>> gibbs_weights(torch.tensor([0.0, 1.0]), 0.0)
    tensor([0.5000, 0.5000])
    """
    if lam < 0 or not math.isfinite(lam):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    dtype = scores.dtype if scores.dtype == torch.float64 else torch.float32
    return torch.softmax(scores.to(dtype) * lam, dim=-1)


class RWSAM(PerturbedOptimizer):
    """Reweighted SAM: SAM whose perturbation comes from a Gibbs-reweighted batch gradient.

    Args:
        model: the module to train.
        base: any ``torch.optim.Optimizer`` instance over the model's parameters.
        rho: radius ρ >= 0.
        lam: inverse temperature λ >= 0 of the Gibbs weights (``0``: SAM).
        delta: finite-difference step δ > 0.
        normalize: RW-SAM (``True``) or its unnormalised form (``False``).
        weighted_descent: use the weights p in pass 2 too (default: uniform; UNCONFIRMED).
        probe: ``"rademacher"`` (default; least variance) or ``"gaussian"``.
        normalize_probe: rescale z to unit norm (default ``False``: entries ±1).
        n_probes: finite differences averaged per step (each one more forward; default 1).
        score: ``"abs"`` for abs(Δℓ)/δ (default) or ``"square"`` for (Δℓ/δ)².
        standardize: standardise the scores over the batch before the softmax.
        mix: weight of the uniform distribution mixed into p, in [0, 1].
        seed: seed of the probe generator (default: drawn from torch's global generator).
        scaler: optional ``torch.amp.GradScaler`` (float16).
        skip_nonfinite: skip the whole step on a non-finite loss or gradient.
        scope: under ``DistributedDataParallel``, ``"local"`` (default) or ``"global"``; see
            ``sam_tutorial.optim.base`` (ignored for a model that is not DDP-wrapped).

    After each step, ``last_weights`` holds p and ``last_scores`` the estimates ĝ (device
    tensors). ``state_dict`` includes the probe generator's state, so a resumed run draws the same
    probes as an uninterrupted one.
    """

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        rho: float,
        lam: float,
        delta: float,
        normalize: bool = True,
        weighted_descent: bool = False,
        probe: str = "rademacher",
        normalize_probe: bool = False,
        n_probes: int = 1,
        score: str = "abs",
        standardize: bool = False,
        mix: float = 0.0,
        seed: int | None = None,
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
        if isinstance(lam, bool) or not isinstance(lam, int | float) or not lam >= 0 or lam == math.inf:
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        if isinstance(delta, bool) or not isinstance(delta, int | float) or not delta > 0:
            raise ValueError(f"delta must be a number > 0, got {delta!r}")
        if probe not in PROBES:
            raise ValueError(f"probe must be one of {', '.join(PROBES)}; got {probe!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
        if isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1:
            raise ValueError(f"n_probes must be an integer >= 1, got {n_probes!r}")
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"mix must be in [0, 1], got {mix!r}")
        self.lam, self.delta = float(lam), float(delta)
        self.weighted_descent = bool(weighted_descent)
        self.probe, self.normalize_probe, self.n_probes = probe, bool(normalize_probe), n_probes
        self.score, self.standardize, self.mix = score, bool(standardize), float(mix)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self._z: list[tuple[Tensor, list[Tensor]]] = []
        self._z_for: list[Any] | None = None
        self.last_weights: Tensor | None = None
        self.last_scores: Tensor | None = None

    # ------------------------------------------------------------------ probe
    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def _draw_probe(self) -> list[tuple[Tensor, list[Tensor]]]:
        """Fill one flat buffer per parameter group with z; return (flat, per-parameter views)."""
        groups = self.groups()
        if self._z_for is not groups:  # groups() returns a new list only when the parameters change
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
        if self.normalize_probe:
            norm = torch.linalg.vector_norm(
                torch.stack([
                    torch.linalg.vector_norm(f, dtype=torch.promote_types(f.dtype, torch.float32))
                    .to(self._z[0][0].device)
                    for f, _ in self._z
                ])
            )
            for flat, _ in self._z:
                flat.div_(norm.to(flat.device))
        return self._z

    def probe_losses(self, inputs: Inputs, targets: Targets, loss_fn: LossFn, n: int) -> Tensor:
        """Per-sample losses f_i(w + δz) for each of ``n_probes`` fresh probes, shape [n_probes, n].

        The weights and the model's buffers are exactly as before when this returns.
        """
        out = []
        self.save_weights()
        with torch.no_grad():
            for _ in range(self.n_probes):
                for g, (_, views) in zip(self.groups(), self._draw_probe()):
                    torch._foreach_add_(g.params, views, alpha=self.delta)
                weights_changed()
                try:
                    out.append(self.forward_losses(inputs, targets, loss_fn, n))
                finally:
                    self.restore_weights()
                    self._restore_buffers(before_step=True)
        return torch.stack(out)

    def weights(self, losses: Tensor, plus: Tensor) -> Tensor:
        """Gibbs weights from per-sample losses at w and at w + δz (one row per probe)."""
        diff = (plus - losses.unsqueeze(0)) / self.delta
        scores = (diff.abs() if self.score == "abs" else diff.square()).mean(0)
        self.last_scores = scores
        if self.standardize:
            scores = (scores - scores.mean()) / (scores.std(correction=0) + 1e-12)
        p = gibbs_weights(scores, self.lam)
        if self.mix:
            p = (1 - self.mix) * p + self.mix / p.numel()
        return p

    # ------------------------------------------------------------------ step
    def _perturbed_step(
        self, inputs: Inputs, targets: Targets, loss_fn: LossFn, n: int
    ) -> StepStats:
        plus = self.probe_losses(inputs, targets, loss_fn, n)
        with self.ascent_context():
            losses = self.forward_losses(inputs, targets, loss_fn, n)
            self.zero_grad()
            if self.scope == "global":
                p, factor = self._global_weights(losses.detach(), plus)
            else:
                p, factor = self.weights(losses.detach(), plus).detach(), 1.0
            self.last_weights = p
            self.backward((p.to(losses.dtype) * losses).sum() * factor)
        gnorm = self.grad_norm()
        self.save_buffers()  # the weights backup still holds w: probe_losses saved and restored it
        scale = self.perturbation_scale(gnorm)
        self.perturb(scale)
        self.zero_grad()
        losses2 = self.forward_losses(inputs, targets, loss_fn, n)
        loss2 = losses2.mean()
        loss = losses.detach().mean()
        ok = torch.isfinite(loss) & torch.isfinite(gnorm) & torch.isfinite(plus).all()
        descent = (p.to(losses2.dtype) * losses2).sum() * factor if self.weighted_descent else loss2
        self.backward(self.poison_unless(descent, ok))
        ok = ok & torch.isfinite(loss2)
        skipped = self.finish(ok)
        return StepStats(loss, loss2.detach(), self.unscaled(gnorm), scale * gnorm, skipped)

    def _global_weights(self, losses: Tensor, plus: Tensor) -> tuple[Tensor, float]:
        """Gibbs weights over the global batch (DDP, ``scope="global"``): this rank's slice, and the
        factor that undoes DDP's averaging over ranks so the all-reduced gradient is Σ_all p_i ∇f_i."""
        import torch.distributed as dist

        world, rank = dist.get_world_size(), dist.get_rank()
        local = torch.cat([losses.unsqueeze(0), plus])  # [1 + n_probes, B]
        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local)
        everything = torch.cat(gathered, dim=1)
        p = self.weights(everything[0], everything[1:]).detach()
        b = losses.numel()
        return p[rank * b : (rank + 1) * b], float(world)

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "probe_rng": {str(d): g.get_state() for d, g in self._generators.items()},
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.seed = int(state.get("seed", self.seed))
        self._generators = {}
        for dev, rng in state.get("probe_rng", {}).items():
            self._generator(torch.device(dev)).set_state(rng)
