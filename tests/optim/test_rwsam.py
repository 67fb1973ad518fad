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
        for u, v in zip(sa[:5], sb[:5]):  # RW-SAM alone reports weights
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
@pytest.mark.parametrize("transform", ["abs", "square"])
def test_step_follows_the_paper_computed_by_hand(weighted_descent: bool, transform: str) -> None:
    """probe w + δu, u = z/‖z‖ (‖δu‖ = δ, the radius); score ‖z‖·|ℓ_i(w+δu) − ℓ_i(w)|/δ;
    p = softmax(λ score); e = ρ g_P/‖g_P‖ with g_P = Σ p_i ∇f_i(w); descent: ∇f_γ(w+e) (or
    Σ p_i ∇f_i(w+e)); per-sample gradients of the linear model by hand."""
    model, x, y = regression(n=10)
    w = model.weight.detach().clone().squeeze(0)
    lr, rho, lam, delta = 0.1, 0.2, 3.0, 1e-4
    recorder = WeightRecorder(model)
    opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=lr), rho=rho, lam=lam, delta=delta,
                weighted_descent=weighted_descent, transform=transform, seed=11)
    opt.step(x, y, half_squared)
    u = (recorder.seen[0].squeeze(0) - w) / delta
    torch.testing.assert_close(u.norm(), torch.tensor(1.0, dtype=u.dtype), atol=1e-9, rtol=0)  # radius δ
    z = u * math.sqrt(u.numel())
    torch.testing.assert_close(z.abs(), torch.ones_like(z), atol=1e-9, rtol=0)  # Rademacher ±1

    def losses(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x @ v - y) ** 2

    diff = (losses(w + delta * u) - losses(w)) / delta * math.sqrt(u.numel())
    scores = diff.abs() if transform == "abs" else diff**2
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
    """‖z‖·|ℓ_i(w+δu) − ℓ_i(w)|/δ → |zᵀ∇f_i(w)| as δ → 0 (first-order Taylor)."""
    model, x, y = regression(n=10)
    w = model.weight.detach().clone().squeeze(0)
    recorder = WeightRecorder(model)
    opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.0), rho=0.1, lam=1.0, delta=1e-7,
                seed=2)
    opt.step(x, y, half_squared)
    z = torch.round((recorder.seen[0].squeeze(0) - w) / 1e-7 * math.sqrt(w.numel()))
    exact = (x * (x @ w - y).unsqueeze(1) @ z).abs()
    torch.testing.assert_close(opt.last_scores, exact, atol=1e-5, rtol=0)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("normalize_probe", [False, True])
def test_probe_radius_is_delta_and_scores_follow_the_probe(probe: str, normalize_probe: bool) -> None:
    """‖w⁺ − w‖ = δ for every probe; the score is |zᵀ∇f_i| (entries ±1 or N(0,1)), or |uᵀ∇f_i| with
    ``normalize_probe``; the exact score along the same probe agrees with the finite difference."""
    model, x, y = regression(n=10, d=6)
    w = model.weight.detach().clone().squeeze(0)
    delta = 1e-6
    recorder = WeightRecorder(model)
    opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.0), rho=0.1, lam=1.0, delta=delta,
                probe=probe, normalize_probe=normalize_probe, seed=4)
    opt.step(x, y, half_squared)
    u = (recorder.seen[0].squeeze(0) - w) / delta
    torch.testing.assert_close(u.norm(), torch.tensor(1.0, dtype=u.dtype), atol=1e-7, rtol=0)
    equal_magnitudes = torch.allclose(u.abs(), u.abs().mean().expand_as(u), atol=1e-7)
    assert equal_magnitudes == (probe == "rademacher")
    grads = x * (x @ w - y).unsqueeze(1)
    along_u = (grads @ u).abs()
    if normalize_probe:
        expected = along_u
    elif probe == "rademacher":
        expected = along_u * math.sqrt(6)
    else:  # the raw Gaussian draw: the same generator, drawn again
        zr = torch.empty(6, dtype=torch.float64).normal_(generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(zr / zr.norm(), u, atol=1e-7, rtol=0)
        expected = (grads @ zr).abs()
    torch.testing.assert_close(opt.last_scores, expected, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        model.weight.copy_(w.unsqueeze(0))
    exact = RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.0), rho=0.1, lam=1.0, score="exact",
                  probe=probe, normalize_probe=normalize_probe, seed=4)
    exact.step(x, y, half_squared)
    torch.testing.assert_close(exact.last_scores, expected, atol=1e-4, rtol=1e-4)


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
    """p = (1 − mix)·softmax(λ·standardised scores) + mix/B, from the scores the step recorded."""
    model = mlp()
    opt = RWSAM(model, sgd(model), rho=0.1, lam=3.0, delta=1e-3, mix=0.25, standardize=True, seed=1)
    opt.step(*batch(), CE)
    s = opt.last_scores
    std = (s - s.mean()) / s.std(correction=0)
    expected = 0.75 * torch.softmax(3.0 * std, 0) + 0.25 / 16
    torch.testing.assert_close(opt.last_weights, expected, atol=1e-6, rtol=0)
    plain = 0.75 * torch.softmax(3.0 * s, 0) + 0.25 / 16  # not standardised: different
    assert not torch.allclose(opt.last_weights, plain, atol=1e-3)


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


# ----------------------------------------------------------------------------- scores in real conditions
def _net(dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(64, 5))


def _data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 20, generator=g), torch.randint(0, 5, (n,), generator=g)


def _directional_derivatives(model: torch.nn.Module, z: torch.Tensor, x: torch.Tensor,
                             y: torch.Tensor) -> torch.Tensor:
    """zᵀ∇ℓ_i for every sample, from per-sample gradients by torch.func (eval mode, float32)."""
    from torch.func import functional_call, grad, vmap

    model = model.eval()
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(ps: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return CE(functional_call(model, ps, (xi[None],)), yi[None])[0]

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([g[name].flatten(1) for name in params], 1) @ z


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def _scored(score: str, dropout: float = 0.0, autocast: bool = False) -> tuple[RWSAM, torch.Tensor]:
    model = _net(dropout)
    reference = _net(dropout)
    opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.0), rho=0.05, lam=0.1, score=score, seed=5)
    x, y = _data()
    torch.manual_seed(11)  # the dropout masks of the step
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        opt.step(x, y, CE)
    return opt, _directional_derivatives(reference, opt._z[0][0], x, y)


def test_exact_scores_equal_per_sample_directional_derivatives() -> None:
    """score='exact' is |zᵀ∇ℓ_i| to float32 round-off (per-sample gradients from torch.func); the
    finite difference with the default radius tracks it closely."""
    exact, truth = _scored("exact")
    torch.testing.assert_close(exact.last_scores, truth.abs(), atol=1e-5, rtol=1e-4)
    assert _corr(exact.last_scores, truth.abs()) > 0.99999
    fd, truth = _scored("finite-difference")
    assert _corr(fd.last_scores, truth.abs()) > 0.999


def test_probe_and_pass_1_see_the_same_dropout_masks() -> None:
    """With Dropout(0.1) in train mode the finite-difference scores match the exact scores of the same
    masks (before the fix: scores of mask noise, 1/Σp² = 1)."""
    fd, _ = _scored("finite-difference", dropout=0.1)
    exact, _ = _scored("exact", dropout=0.1)
    assert _corr(fd.last_scores, exact.last_scores) > 0.995
    assert fd.last_weights is not None
    assert float(1 / (fd.last_weights**2).sum()) > 0.9 * 64


def test_scores_survive_bfloat16_autocast() -> None:
    """Under bfloat16 autocast both scores still track the exact float32 directional derivatives."""
    for score in ("finite-difference", "exact"):
        opt, truth = _scored(score, autocast=True)
        assert _corr(opt.last_scores, truth.abs()) > 0.999, score


def test_exact_score_costs_no_extra_forward_without_autocast() -> None:
    model = mlp()
    counter = PassCounter(model)
    RWSAM(model, sgd(model), rho=0.05, lam=1.0, score="exact").step(*batch(), CE)
    assert (counter.forward, counter.backward) == (2, 2)


def test_norm_scores_are_exact_per_sample_gradient_norms() -> None:
    """score='norm' is √(2/π)‖∇ℓ_i‖, each gradient taken by its own backward pass (a second route), and
    the step's StepStats carries the Gibbs weights it used."""
    model, reference = _net(0.0), _net(0.0)
    opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.0), rho=0.05, lam=0.1, score="norm", seed=5)
    x, y = _data()
    stats = opt.step(x, y, CE)
    norms = []
    for i in range(len(x)):
        reference.zero_grad()
        CE(reference(x[i : i + 1]), y[i : i + 1]).sum().backward()
        norms.append(torch.cat([p.grad.flatten() for p in reference.parameters()]).norm())
    expected = math.sqrt(2 / math.pi) * torch.stack(norms)
    torch.testing.assert_close(opt.last_scores, expected, atol=1e-5, rtol=1e-4)
    assert stats.weights is not None and torch.equal(stats.weights, opt.last_weights)
    torch.testing.assert_close(stats.weights, gibbs_weights(opt.last_scores, 0.1))


def test_norm_score_refuses_batchnorm_in_training_mode() -> None:
    model = mlp(bn=True)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="BatchNorm"):
        RWSAM(model, sgd(model), rho=0.05, lam=1.0, score="norm").step(*batch(), CE)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
