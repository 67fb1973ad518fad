"""Tests for sam_tutorial.sgn.variance and sam_tutorial.sgn.fast_norms: per-sample gradients, tr V, the
spectrum of
V, the mini-batch gradient moments (claims C1, C2) and Fisher traces, against loops and enumeration."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from sam_tutorial.curvature import hessian
from sam_tutorial.sgn import batches as batch_law
from sam_tutorial.sgn import fisher, per_sample, variance
from sam_tutorial.sgn.fast_norms import ModuleReusedError, per_sample_sq_norms, supports_fast_norms
from sam_tutorial.sgn.monte_carlo import sample_batches

CE = nn.CrossEntropyLoss(reduction="none")


def _with_bn_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm running statistics, so eval-mode BN is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen, dtype=torch.float64) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen, dtype=torch.float64) + 0.5)
    return model


def _models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Tanh(), nn.Linear(7, 3))
    seq = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Flatten(), nn.Linear(6 * 4, 3))
    cnn1 = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1, stride=2),
        nn.BatchNorm1d(4),
        nn.ReLU(),
        nn.Conv1d(4, 3, 3, dilation=2, padding="same"),
        nn.GroupNorm(1, 3),
        nn.Flatten(),
        nn.Linear(3 * 6, 3),
    )
    cnn2 = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 2, stride=2),
        nn.Flatten(),
        nn.Linear(45, 3),
    )
    models = {
        "mlp": (mlp, torch.randn(11, 5)),
        "sequence": (seq, torch.randn(11, 4, 5)),
        "conv1d": (cnn1, torch.randn(11, 2, 12)),
        "conv2d": (cnn2, torch.randn(11, 2, 6, 6)),
    }
    return {k: (_with_bn_stats(m.double()).train(), x.double()) for k, (m, x) in models.items()}


MODELS = _models()
TARGETS = torch.randint(0, 3, (11,), generator=torch.Generator().manual_seed(1))


def _loop_grads(model: nn.Module, loss_fn, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients one sample at a time with plain autograd (eval mode)."""
    params = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    rows = []
    for i in range(inputs.shape[0]):
        loss = loss_fn(model(inputs[i : i + 1]), targets[i : i + 1]).sum()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    model.train(was)
    return torch.stack(rows)


@pytest.mark.parametrize("name", list(MODELS))
def test_per_sample_grads_equal_a_python_loop(name: str) -> None:
    model, x = MODELS[name]
    expected = _loop_grads(model, CE, x, TARGETS)
    for chunk in (None, 4):
        got = per_sample.per_sample_grads(model, CE, x, TARGETS, chunk_size=chunk)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_per_sample_grads_skip_frozen_parameters_and_take_tuple_inputs() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self.a(u) * self.b(v)

    torch.manual_seed(0)
    model = TwoInputs().double()
    model.a.bias.requires_grad_(False)
    u, v, y = torch.randn(5, 3).double(), torch.randn(5, 4).double(), torch.randint(0, 2, (5,))
    got = per_sample.per_sample_grads(model, CE, (u, v), y)
    params = [p for p in model.parameters() if p.requires_grad]
    assert got.shape == (5, sum(p.numel() for p in params))
    for i in range(5):
        loss = CE(model(u[i : i + 1], v[i : i + 1]), y[i : i + 1]).sum()
        row = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        torch.testing.assert_close(got[i], row, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["vmap", "hooks"])
def test_trace_V_equals_brute_force(name: str, method: str) -> None:
    model, x = MODELS[name]
    g = _loop_grads(model, CE, x, TARGETS)
    expected = ((g - g.mean(0)) ** 2).sum(1).mean()
    for chunk in (None, 3):  # 3 does not divide 11: uneven chunks are merged
        got = variance.trace_V(model, CE, x, TARGETS, chunk_size=chunk, method=method)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_analysis_leaves_the_model_untouched() -> None:
    model, x = MODELS["conv1d"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    variance.trace_V(model, CE, x, TARGETS)
    per_sample.per_sample_grads(model, CE, x, TARGETS)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_auto_falls_back_to_vmap_for_unsupported_models() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(torch.tanh(self.lin(x)))

    torch.manual_seed(0)
    x, y = torch.randn(6, 3).double(), torch.randint(0, 3, (6,))
    emb = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 3)).double()
    assert not supports_fast_norms(emb)
    shared = Shared().double()
    assert supports_fast_norms(shared)  # only the forward pass reveals the reuse
    with pytest.raises(ModuleReusedError):
        per_sample_sq_norms(shared, CE, x, y)
    for model, inputs in ((emb, torch.randint(0, 5, (6,))), (shared, x)):
        g = _loop_grads(model, CE, inputs, y)
        expected = ((g - g.mean(0)) ** 2).sum(1).mean()
        torch.testing.assert_close(variance.trace_V(model, CE, inputs, y), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape", [(6, 20), (30, 5)])  # Gram route (n < P) and covariance route
def test_sgn_spectrum_equals_eigvalsh_of_V(shape: tuple[int, int]) -> None:
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = g - g.mean(0)
    expected = torch.linalg.eigvalsh(c.T @ c / shape[0]).flip(0)[: min(shape)]
    torch.testing.assert_close(variance.sgn_spectrum(g), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(variance.sgn_spectrum(g, k=2), expected[:2], rtol=0, atol=1e-12)
    torch.testing.assert_close(variance.sgn_spectrum(g).sum(), variance.sgn_trace(g), rtol=1e-12, atol=0)


def _enumerate_batches(grads: torch.Tensor, b: int, replacement: bool) -> tuple[float, float]:
    """E||g_B||^2 and E||g_B|| over every ordered batch (with) or every subset (without)."""
    n = grads.shape[0]
    batches = itertools.product(range(n), repeat=b) if replacement else itertools.combinations(range(n), b)
    norms = torch.stack([grads[list(s)].mean(0).norm() for s in batches])
    return float((norms**2).mean()), float(norms.mean())


GRADS = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.3


@pytest.mark.parametrize("replacement", [False, True])
def test_C1_second_moment_identity_by_exact_enumeration(replacement: bool) -> None:
    n = GRADS.shape[0]
    for b in range(1, n + 1):
        sq, norm = _enumerate_batches(GRADS, b, replacement)
        c_b = 1 / b if replacement else (n - b) / (b * (n - 1))
        closed = GRADS.mean(0).square().sum() + c_b * variance.sgn_trace(GRADS)
        c_law = batch_law.batch_noise_coefficient(n, b, replacement=replacement)
        assert c_law == pytest.approx(c_b, rel=1e-15)
        assert float(closed) == pytest.approx(sq, rel=1e-10)
        closed_sq = float(batch_law.expected_sq_batch_grad_norm(GRADS, b, replacement=replacement))
        assert closed_sq == pytest.approx(
            sq, rel=1e-10
        )
        moments = batch_law.batch_grad_moments(GRADS, b, replacement=replacement)
        assert moments.exact
        assert float(moments.sq_norm) == pytest.approx(sq, rel=1e-10)
        assert float(moments.norm) == pytest.approx(norm, rel=1e-10)


@pytest.mark.parametrize("replacement", [False, True])
def test_C2_expected_gradient_norm_decreases_with_batch_size(replacement: bool) -> None:
    norms = torch.stack(
        [batch_law.batch_grad_moments(GRADS, b, replacement=replacement).norm for b in range(1, 7)]
    )
    assert bool((norms[1:] < norms[:-1]).all()), norms  # Prop 3.9: strictly, for generic data


def test_batch_moments_monte_carlo_matches_enumeration() -> None:
    exact = batch_law.batch_grad_moments(GRADS, 3)
    mc = batch_law.batch_grad_moments(GRADS, 3, max_batches=5, generator=torch.Generator().manual_seed(0))
    assert not mc.exact and mc.sq_norm.shape == ()
    # the Monte Carlo moments are those of the batches drawn by sample_batches from the same generator
    draws = sample_batches(6, 3, 5, replacement=False, generator=torch.Generator().manual_seed(0))
    g_batches = GRADS[draws].mean(1)
    assert float(mc.sq_norm) == pytest.approx(float(g_batches.square().sum(1).mean()), rel=1e-12)
    assert float(mc.norm) == pytest.approx(float(g_batches.norm(dim=1).mean()), rel=1e-12)
    big = batch_law.batch_grad_moments(
        GRADS, 3, replacement=True, max_batches=20, generator=torch.Generator().manual_seed(0)
    )
    assert not big.exact  # C(8, 3) = 56 multisets > 20
    many = batch_law.batch_distribution(40, 5, max_batches=20000, generator=torch.Generator().manual_seed(0))
    assert not many.exact
    # each sample is in a batch with probability b/n, and no index repeats without replacement
    torch.testing.assert_close(
        (many.weights > 0).double().mean(0), torch.full((40,), 5 / 40, dtype=torch.float64), atol=0.01, rtol=0
    )
    assert bool(((many.weights * 5).round() <= 1).all())
    assert float(exact.sq_norm) == pytest.approx(
        float(batch_law.expected_sq_batch_grad_norm(GRADS, 3)), rel=1e-12
    )


def test_replacement_multiset_probabilities_sum_to_one() -> None:
    dist = batch_law.batch_distribution(4, 3, replacement=True, dtype=torch.float64)
    assert dist.exact and dist.weights.shape == (20, 4)
    assert float(dist.probs.sum()) == pytest.approx(1.0, abs=1e-14)
    torch.testing.assert_close(dist.probs @ dist.weights, torch.full((4,), 0.25, dtype=torch.float64))


def test_fisher_traces() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(4, 3).double()
    x = torch.randn(9, 4).double()
    y = torch.randint(0, 3, (9,))
    # true Fisher by a loop over samples and classes
    params = list(lin.parameters())
    total = torch.zeros((), dtype=torch.float64)
    for i in range(9):
        log_p = lin(x[i : i + 1]).log_softmax(-1)[0]
        for c in range(3):
            g = torch.autograd.grad(log_p[c], params, retain_graph=True)
            total = total + log_p[c].exp().detach() * sum(t.square().sum() for t in g)
    exact = fisher.fisher_trace(lin, x)
    torch.testing.assert_close(exact, total / 9, rtol=1e-12, atol=0)
    # a linear softmax model: the Fisher is the Hessian of the mean cross-entropy, whatever the labels
    torch.testing.assert_close(exact, hessian.hessian_matrix(lin, CE, x, y).trace(), rtol=1e-10, atol=0)
    sampled = fisher.fisher_trace(lin, x, n_label_samples=500, generator=torch.Generator().manual_seed(0))
    assert float(sampled) == pytest.approx(float(exact), rel=0.03)
    # empirical Fisher = tr V + ||grad f||^2
    g = _loop_grads(lin, CE, x, y)
    for method in ("hooks", "vmap"):
        emp = variance.empirical_fisher_trace(lin, CE, x, y, method=method)
        torch.testing.assert_close(emp, variance.sgn_trace(g) + g.mean(0).square().sum(), rtol=1e-12, atol=0)


def test_bad_arguments_raise_value_error_naming_them() -> None:
    model, x = MODELS["mlp"]
    with pytest.raises(ValueError, match="batch size"):
        variance.trace_V(model, CE, x, TARGETS[:5])
    with pytest.raises(ValueError, match="per-sample losses"):
        per_sample.per_sample_grads(model, nn.CrossEntropyLoss(), x, TARGETS)
    with pytest.raises(ValueError, match="per-sample losses"):
        variance.trace_V(model, nn.CrossEntropyLoss(), x, TARGETS)
    with pytest.raises(ValueError, match="chunk_size"):
        per_sample.per_sample_grads(model, CE, x, TARGETS, chunk_size=0)
    with pytest.raises(ValueError, match="method"):
        variance.trace_V(model, CE, x, TARGETS, method="fast")
    with pytest.raises(ValueError, match="method='hooks'"):
        variance.trace_V(
            nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 3)),
            CE,
            torch.zeros(4).long(),
            TARGETS[:4],
            method="hooks",
        )
    with pytest.raises(ValueError, match="b must be"):
        batch_law.batch_noise_coefficient(5, 6)
    with pytest.raises(ValueError, match="b must be"):
        batch_law.batch_grad_moments(GRADS, 0)
    with pytest.raises(ValueError, match="k must be"):
        variance.sgn_spectrum(GRADS, k=7)
    with pytest.raises(ValueError, match="n_label_samples"):
        fisher.fisher_trace(model, x, n_label_samples=0)
