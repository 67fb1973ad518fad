"""SAM / USAM / ASAM against closed forms, the closure contract, and rho = 0 against the base optimizer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sam_tutorial.optim import SAM
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


@pytest.mark.parametrize("normalize", [False, True])
def test_sam_and_usam_match_the_closed_form(normalize: bool) -> None:
    """USAM: w − η∇f(w + ρ∇f(w)); SAM: w − η∇f(w + ρ∇f(w)/‖∇f(w)‖), gradients by hand."""
    model, x, y = regression()
    w = model.weight.detach().clone().squeeze(0)
    lr, rho = 0.1, 0.3
    g = lsq_grad(w, x, y)
    e = rho * g / (g.norm() if normalize else 1.0)
    expected = w - lr * lsq_grad(w + e, x, y)
    opt = SAM(model, torch.optim.SGD(model.parameters(), lr=lr), rho=rho, normalize=normalize)
    stats = opt.step(x, y, half_squared)
    torch.testing.assert_close(model.weight.squeeze(0), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(stats.grad_norm.double(), g.norm(), atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.perturbation_norm.double(), e.norm(), atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.loss, 0.5 * ((x @ w - y) ** 2).mean())
    torch.testing.assert_close(stats.loss_perturbed, 0.5 * ((x @ (w + e) - y) ** 2).mean())
    assert not bool(stats.skipped)


def test_asam_matches_the_closed_form() -> None:
    """ASAM: e = ρ T² g / ‖T g‖ with T = |w| + η_A (Kwon et al. 2021)."""
    model, x, y = regression()
    w = model.weight.detach().clone().squeeze(0)
    lr, rho, eta = 0.1, 0.5, 0.01
    g = lsq_grad(w, x, y)
    t = w.abs() + eta
    e = rho * t * t * g / (t * g).norm()
    expected = w - lr * lsq_grad(w + e, x, y)
    base = torch.optim.SGD(model.parameters(), lr=lr)
    SAM(model, base, rho=rho, adaptive=True, adaptive_eps=eta).step(x, y, half_squared)
    torch.testing.assert_close(model.weight.squeeze(0), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("make_base", [
    lambda m: sgd(m),
    lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=1e-4),
])
def test_rho_zero_is_the_base_optimizer_bit_for_bit(make_base) -> None:
    reference, model = mlp(bn=True), mlp(bn=True)
    ref_opt, opt = make_base(reference), SAM(model, make_base(model), rho=0.0)
    counter = PassCounter(model)
    for step in range(4):
        x, y = batch(seed=step)
        ref_opt.zero_grad()
        CE(reference(x), y).mean().backward()
        ref_opt.step()
        opt.step(x, y, CE)
    assert_params_equal(reference, model)
    for a, b in zip(reference.buffers(), model.buffers()):
        assert torch.equal(a, b)
    assert (counter.forward, counter.backward) == (4, 4)  # SGD: 1F/1B per step


def test_sam_makes_two_forward_and_two_backward_passes() -> None:
    model = mlp()
    counter = PassCounter(model)
    SAM(model, sgd(model), rho=0.05).step(*batch(), CE)
    assert (counter.forward, counter.backward) == (2, 2)


def test_closure_contract_matches_the_batch_api() -> None:
    x, y = batch()
    a, b = mlp(bn=True), mlp(bn=True)
    opt_a, opt_b = SAM(a, sgd(a), rho=0.1), SAM(b, sgd(b), rho=0.1)
    calls = []

    def closure() -> torch.Tensor:
        opt_b.zero_grad()
        loss = CE(b(x), y).mean()
        loss.backward()
        calls.append(loss.detach())
        return loss

    for _ in range(3):
        stats = opt_a.step(x, y, CE)
        calls.clear()
        returned = opt_b.step(closure)
        assert len(calls) == 2, "the closure is called at w and at w + e"
        assert torch.equal(returned.detach(), calls[0])
        torch.testing.assert_close(returned.detach(), stats.loss, atol=1e-12, rtol=0)
    assert_params_equal(a, b, atol=1e-12)
    for p, q in zip(a.buffers(), b.buffers()):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=0)


def test_first_and_second_step_match_step() -> None:
    x, y = batch()
    a, b = mlp(bn=True), mlp(bn=True)
    opt_a, opt_b = SAM(a, sgd(a), rho=0.1), SAM(b, sgd(b), rho=0.1)
    for _ in range(3):
        opt_a.step(x, y, CE)
        opt_b.zero_grad()
        CE(b(x), y).mean().backward()
        opt_b.first_step(zero_grad=True)
        CE(b(x), y).mean().backward()
        opt_b.second_step(zero_grad=True)
    assert_params_equal(a, b, atol=1e-12)
    for p, q in zip(a.buffers(), b.buffers()):
        assert torch.equal(p, q)
    with pytest.raises(RuntimeError, match="without first_step"):
        opt_b.second_step()


def test_tuple_inputs() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(5, 3).double(), nn.Linear(2, 3).double()

        def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self.a(u) + self.b(v)

    torch.manual_seed(0)
    model = TwoInputs()
    x, y = batch()
    v = torch.randn(16, 2, dtype=torch.float64)
    ref = copy.deepcopy(model)
    SAM(model, sgd(model), rho=0.1).step((x, v), y, CE)
    # the same step written by hand
    ref_opt = sgd(ref)
    CE(ref(x, v), y).mean().backward()
    g = [p.grad.clone() for p in ref.parameters()]
    norm = torch.sqrt(sum((t**2).sum() for t in g))
    with torch.no_grad():
        for p, t in zip(ref.parameters(), g):
            p.add_(0.1 * t / (norm + 1e-12))
    ref_opt.zero_grad()
    CE(ref(x, v), y).mean().backward()
    with torch.no_grad():
        for p, t in zip(ref.parameters(), g):
            p.sub_(0.1 * t / (norm + 1e-12))
    ref_opt.step()
    assert_params_equal(model, ref, atol=1e-12)


def test_bfloat16_autocast_on_cpu_matches_a_hand_written_step() -> None:
    x, y = batch(dtype=torch.float32)
    a, b = mlp(dtype=torch.float32), mlp(dtype=torch.float32)
    opt = SAM(a, torch.optim.SGD(a.parameters(), lr=0.1), rho=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stats = opt.step(x, y, CE)
    assert stats.loss.dtype == torch.float32  # cross-entropy is autocast to float32
    ref_opt = torch.optim.SGD(b.parameters(), lr=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        CE(b(x), y).mean().backward()
    g = [p.grad.clone() for p in b.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([t.norm() for t in g]))
    backup = [p.detach().clone() for p in b.parameters()]
    with torch.no_grad():
        for p, t in zip(b.parameters(), g):
            p.add_(t * (0.05 / (norm + 1e-12)))
    ref_opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss2 = CE(b(x), y).mean()
    loss2.backward()
    with torch.no_grad():
        for p, w in zip(b.parameters(), backup):
            p.copy_(w)
    ref_opt.step()
    assert_params_equal(a, b, atol=1e-6)
    torch.testing.assert_close(stats.loss_perturbed, loss2.detach())


def test_several_steps_inside_one_autocast_region_see_the_current_weights() -> None:
    """Autocast caches weight casts per region; the engine must invalidate them when weights move."""
    x, y = batch(dtype=torch.float32)
    a, b = mlp(dtype=torch.float32), mlp(dtype=torch.float32)
    opt_a = SAM(a, torch.optim.SGD(a.parameters(), lr=0.1), rho=0.05)
    opt_b = SAM(b, torch.optim.SGD(b.parameters(), lr=0.1), rho=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(3):
            opt_a.step(x, y, CE)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            opt_b.step(x, y, CE)
    assert_params_equal(a, b)
