"""RW-SAM: the algorithm of the paper step by step, λ = 0 is SAM, pass counts, probes, Gibbs weights."""

from __future__ import annotations

import math

import pytest
import torch

from sam_tutorial.optim import RWSAM, SAM, gibbs_weights
from tests.optim.helpers import (
    CE,
    PassCounter,
    assert_params_equal,
    batch,
    half_squared,
    lsq_grad,
    mlp,
    regression,
    sgd,
)


def test_lam_zero_is_sam() -> None:
    a, b = mlp(bn=True), mlp(bn=True)
    opt_a = RWSAM(a, sgd(a), rho=0.1, lam=0.0, delta=1e-3)
    opt_b = SAM(b, sgd(b), rho=0.1)
    for s in range(3):
        x, y = batch(seed=s)
        sa, sb = opt_a.step(x, y, CE), opt_b.step(x, y, CE)
        for u, v in zip(sa, sb):
            torch.testing.assert_close(u, v, atol=1e-12, rtol=0)
    assert_params_equal(a, b, atol=1e-12)
    for u, v in zip(a.buffers(), b.buffers()):
        assert torch.equal(u, v)


class WeightRecorder:
    """Records the weights each forward pass sees (the first forward of a step is the probe)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seen: list[torch.Tensor] = []
        model.register_forward_pre_hook(lambda mod, args: self.seen.append(mod.weight.detach().clone()))


@pytest.mark.parametrize("weighted_descent", [False, True])
@pytest.mark.parametrize("score", ["abs", "square"])
def test_step_follows_the_paper_computed_by_hand(weighted_descent: bool, score: str) -> None:
    """p = softmax(λ |ℓ_i(w+δz) − ℓ_i(w)|/δ); e = ρ g_P/‖g_P‖ with g_P = Σ p_i ∇f_i(w);
    descent: ∇f_γ(w+e) (or Σ p_i ∇f_i(w+e)); per-sample gradients of the linear model by hand."""
    model, x, y = regression(n=10)
    w = model.weight.detach().clone().squeeze(0)
    lr, rho, lam, delta = 0.1, 0.2, 3.0, 1e-4
    recorder = WeightRecorder(model)
    opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=lr), rho=rho, lam=lam, delta=delta,
                weighted_descent=weighted_descent, score=score, seed=11)
    opt.step(x, y, half_squared)
    z = (recorder.seen[0].squeeze(0) - w) / delta
    torch.testing.assert_close(z.abs(), torch.ones_like(z), atol=1e-9, rtol=0)  # Rademacher ±1

    def losses(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x @ v - y) ** 2

    diff = (losses(w + delta * z) - losses(w)) / delta
    scores = diff.abs() if score == "abs" else diff**2
    p = torch.softmax(lam * scores, 0)
    torch.testing.assert_close(opt.last_weights, p, atol=1e-12, rtol=0)
    per_sample = x * (x @ w - y).unsqueeze(1)  # ∇f_i(w) = x_i (x_i·w − y_i)
    g_p = (p.unsqueeze(1) * per_sample).sum(0)
    e = rho * g_p / g_p.norm()
    if weighted_descent:
        descent = (p.unsqueeze(1) * x * (x @ (w + e) - y).unsqueeze(1)).sum(0)
    else:
        descent = lsq_grad(w + e, x, y)
    torch.testing.assert_close(model.weight.squeeze(0), w - lr * descent, atol=1e-12, rtol=0)


def test_finite_difference_scores_estimate_projected_gradient_norms() -> None:
    """|ℓ_i(w+δz) − ℓ_i(w)|/δ → |zᵀ∇f_i(w)| as δ → 0 (first-order Taylor)."""
    model, x, y = regression(n=10)
    w = model.weight.detach().clone().squeeze(0)
    recorder = WeightRecorder(model)
    opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.0), rho=0.1, lam=1.0, delta=1e-7,
                seed=2)
    opt.step(x, y, half_squared)
    z = torch.round((recorder.seen[0].squeeze(0) - w) / 1e-7)
    exact = (x * (x @ w - y).unsqueeze(1) @ z).abs()
    torch.testing.assert_close(opt.last_scores, exact, atol=1e-5, rtol=0)


def test_probe_options() -> None:
    model, x, y = regression(n=10)
    w = model.weight.detach().clone().squeeze(0)
    for probe, normalize_probe in [("gaussian", False), ("rademacher", True), ("gaussian", True)]:
        with torch.no_grad():
            model.weight.copy_(w.unsqueeze(0))
        recorder = WeightRecorder(model)
        RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.0), rho=0.1, lam=1.0, delta=1e-3,
              probe=probe, normalize_probe=normalize_probe, seed=4).step(x, y, half_squared)
        z = (recorder.seen[-3].squeeze(0) - w) / 1e-3  # probe, pass 1, pass 2
        if normalize_probe:
            torch.testing.assert_close(z.norm(), torch.tensor(1.0, dtype=z.dtype), atol=1e-9, rtol=0)
        else:
            assert not torch.allclose(z.abs(), torch.ones_like(z))  # Gaussian entries


def test_three_forward_and_two_backward_passes() -> None:
    model = mlp()
    counter = PassCounter(model)
    RWSAM(model, sgd(model), rho=0.05, lam=1.0, delta=1e-3).step(*batch(), CE)
    assert (counter.forward, counter.backward) == (3, 2)


def test_probes_are_reproducible_from_the_seed() -> None:
    a, b = mlp(), mlp()
    opt_a = RWSAM(a, sgd(a), rho=0.1, lam=2.0, delta=1e-3, seed=5)
    opt_b = RWSAM(b, sgd(b), rho=0.1, lam=2.0, delta=1e-3, seed=5)
    x, y = batch()
    opt_a.step(x, y, CE)
    opt_b.step(x, y, CE)
    assert torch.equal(opt_a.last_weights, opt_b.last_weights)
    assert_params_equal(a, b)


def test_mix_and_standardize() -> None:
    model = mlp()
    opt = RWSAM(model, sgd(model), rho=0.1, lam=50.0, delta=1e-3, mix=0.5, standardize=True)
    opt.step(*batch(), CE)
    p = opt.last_weights
    assert float(p.min()) >= 0.5 / 16 - 1e-12
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=p.dtype), atol=1e-6, rtol=0)


def test_gibbs_weights_maximise_the_entropy_regularised_objective() -> None:
    """C8: softmax(λa) maximises ⟨p, a⟩ + H(p)/λ over the simplex."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, generator=gen, dtype=torch.float64)

    def objective(p: torch.Tensor, lam: float) -> torch.Tensor:
        entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
        return (p * a).sum(-1) + entropy / lam

    for lam in (0.3, 1.0, 7.0):
        best = objective(gibbs_weights(a, lam), lam)
        rivals = torch.distributions.Dirichlet(torch.ones(6, dtype=torch.float64)).sample((5000,))
        assert bool((objective(rivals, lam) <= best + 1e-12).all())
        # the maximum value is log Σ exp(λ a) / λ (the log-partition function)
        torch.testing.assert_close(best, torch.logsumexp(lam * a, 0) / lam, atol=1e-12, rtol=0)


def test_gibbs_weights_limits() -> None:
    a = torch.tensor([0.3, 2.0, -1.0, 1.5], dtype=torch.float64)
    torch.testing.assert_close(gibbs_weights(a, 0.0), torch.full((4,), 0.25, dtype=torch.float64))
    hot = gibbs_weights(a, 1e4)
    assert math.isclose(float(hot[1]), 1.0) and float(hot.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        gibbs_weights(a, -1.0)
