"""Gibbs weights against a direct maximisation, the C9 variances, and the three scores against
independent per-sample gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sam_tutorial.curvature.hutchinson import probe_variance
from sam_tutorial.sgn.per_sample import per_sample_grads
from sam_tutorial.sgn.reweighting import (
    SCORES,
    effective_batch,
    gibbs_objective,
    gibbs_value,
    gibbs_weights,
    maximize_on_simplex,
    maximize_unrelaxed,
    probe_scores,
    rademacher_probe,
    spearman,
    square_probe_variance,
    weight_share,
)

DT = torch.float64


def CE(out, y):
    return nn.functional.cross_entropy(out, y, reduction="none")


@pytest.mark.parametrize("lam", [0.1, 1.0, 10.0])
def test_gibbs_is_the_maximiser(lam) -> None:
    a = torch.rand(12, generator=torch.Generator().manual_seed(0), dtype=DT) * 3
    p = gibbs_weights(a, lam)
    assert float(gibbs_objective(p, a, lam)) == pytest.approx(float(gibbs_value(a, lam)), abs=1e-12)
    q = maximize_on_simplex(a, lam, steps=3000)
    assert float((q - p).abs().sum()) < 1e-6  # found without using the softmax
    others = torch.distributions.Dirichlet(torch.full((12,), 0.5, dtype=DT)).sample((5000,))
    assert float(gibbs_objective(others, a, lam).max()) < float(gibbs_value(a, lam))


def test_unrelaxed_equals_gibbs_for_parallel_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(7, generator=gen, dtype=DT)
    scale = 0.5 + 2 * torch.rand(10, 1, generator=gen, dtype=DT)
    grads = scale * direction  # all g_i parallel: ||sum p g|| = sum p ||g||
    q = maximize_unrelaxed(grads, 1.5, steps=3000)
    torch.testing.assert_close(q, gibbs_weights(grads.norm(dim=1), 1.5), atol=1e-8, rtol=0)
    opposite = torch.cat([grads[:5], -grads[5:]])  # same norms, half of them reversed: not Gibbs any more
    assert float((maximize_unrelaxed(opposite, 1.5) - q).abs().sum()) > 0.1


def test_gibbs_limits() -> None:
    a = torch.tensor([0.3, 2.0, 1.0, 0.5], dtype=DT)
    tv = [float((gibbs_weights(a, lam) - 0.25).abs().sum() / 2) for lam in (1e-3, 1e-4)]
    assert tv[0] == pytest.approx(10 * tv[1], rel=1e-2)  # distance to uniform ∝ lam: SAM as lam -> 0
    torch.testing.assert_close(gibbs_weights(a, 1e3), torch.tensor([0, 1.0, 0, 0], dtype=DT))
    assert float(effective_batch(gibbs_weights(a, 0.0))) == pytest.approx(4.0)
    assert float(effective_batch(gibbs_weights(a, 1e3))) == pytest.approx(1.0)
    share = weight_share(torch.tensor([0.1, 0.2, 0.7]), torch.tensor([True, False, True]))
    assert float(share) == pytest.approx(0.8)


def test_square_probe_variance_closed_form_and_monte_carlo() -> None:
    g = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=DT)
    for kind in ("rademacher", "gaussian"):
        outer = torch.outer(g[0], g[0])
        torch.testing.assert_close(square_probe_variance(g, kind)[0], probe_variance(outer, kind=kind))
    gen = torch.Generator().manual_seed(0)
    z = torch.randint(0, 2, (400_000, 4), generator=gen).to(DT) * 2 - 1
    zg = torch.randn(400_000, 4, generator=gen, dtype=DT)
    assert float(((z @ g[0]) ** 2).var()) == pytest.approx(float(square_probe_variance(g)[0]), rel=0.02)
    gauss = float(square_probe_variance(g, "gaussian")[0])
    assert float(((zg @ g[0]) ** 2).var()) == pytest.approx(gauss, rel=0.03)


def test_spearman() -> None:
    a = torch.tensor([1.0, 5.0, 2.0, 9.0])
    assert float(spearman(a, a.exp())) == pytest.approx(1.0)
    assert float(spearman(a, -a)) == pytest.approx(-1.0)
    assert float(spearman(a, torch.tensor([2.0, 1.0, 3.0, 4.0]))) == pytest.approx(0.4)
    # ties get their average rank: ranks (1.5, 1.5, 3) and (2, 1, 3) correlate 1.5 / sqrt(1.5 * 2)
    assert float(spearman(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([2.0, 1.0, 3.0]))) == pytest.approx(
        1.5 / math.sqrt(3.0))


@pytest.fixture
def net_and_batch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x = torch.randn(10, 5, dtype=DT)
    y = torch.randint(0, 3, (10,))
    return net, x, y


def test_scores_against_per_sample_grads(net_and_batch) -> None:
    net, x, y = net_and_batch
    z = rademacher_probe(net, torch.Generator().manual_seed(1))
    flat_z = torch.cat([t.flatten() for t in z.values()])
    g = per_sample_grads(net, CE, x, y)
    torch.testing.assert_close(probe_scores(net, CE, x, y, method="exact", probe=z, signed=True), g @ flat_z)
    norms = math.sqrt(2 / math.pi) * g.norm(dim=1)
    torch.testing.assert_close(probe_scores(net, CE, x, y, method="norm"), norms)
    # the finite difference converges to the exact score at first order in the radius
    fd = [probe_scores(net, CE, x, y, method="finite-difference", probe=z, delta=r, signed=True)
          for r in (1e-3, 1e-4)]
    errs = [float((s - g @ flat_z).abs().max()) for s in fd]
    assert errs[0] / errs[1] == pytest.approx(10, rel=0.1)
    params_before = [p.clone() for p in net.parameters()]
    probe_scores(net, CE, x, y, method="finite-difference", probe=z)
    assert all(torch.equal(a, b) for a, b in zip(params_before, net.parameters()))


def test_fd_score_is_radius_free_of_model_size() -> None:
    # sqrt(P) |Δℓ| / ||δz|| ≈ |zᵀg|: for a linear least-squares model the score does not depend on P's split
    torch.manual_seed(0)
    net = nn.Linear(200, 1).double()
    x, y = torch.randn(6, 200, dtype=DT), torch.randn(6, 1, dtype=DT)
    loss = lambda out, t: 0.5 * (out - t).square().sum(1)  # noqa: E731
    z = rademacher_probe(net, torch.Generator().manual_seed(2))
    fd = probe_scores(net, loss, x, y, method="finite-difference", probe=z, delta=1e-6)
    jv = probe_scores(net, loss, x, y, method="exact", probe=z)
    torch.testing.assert_close(fd, jv, rtol=1e-5, atol=1e-8)


def test_bad_arguments(net_and_batch) -> None:
    net, x, y = net_and_batch
    with pytest.raises(ValueError, match="method"):
        probe_scores(net, CE, x, y, method="forward-mode")
    with pytest.raises(ValueError, match="delta"):
        probe_scores(net, CE, x, y, delta=0.0)


def test_old_score_names_and_radius_are_deprecated_aliases(net_and_batch) -> None:
    net, x, y = net_and_batch
    z = rademacher_probe(net, torch.Generator().manual_seed(1))
    new = probe_scores(net, CE, x, y, method="finite-difference", probe=z, delta=1e-3)
    with pytest.warns(DeprecationWarning, match="finite-difference"):
        old = probe_scores(net, CE, x, y, method="fd", probe=z, delta=1e-3)
    torch.testing.assert_close(old, new, rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="delta"):
        old = probe_scores(net, CE, x, y, method="finite-difference", probe=z, radius=1e-3)
    torch.testing.assert_close(old, new, rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="'exact'"):
        old = probe_scores(net, CE, x, y, method="jvp", probe=z)
    torch.testing.assert_close(old, probe_scores(net, CE, x, y, method="exact", probe=z), rtol=0, atol=0)


def test_the_scores_are_rwsam_s_own_vocabulary() -> None:
    from sam_tutorial.optim.rwsam import SCORES as RWSAM_SCORES

    assert set(RWSAM_SCORES) <= set(SCORES) and set(SCORES) - set(RWSAM_SCORES) <= {"norm"}
    with pytest.raises(ValueError, match="lam"):
        gibbs_weights(torch.zeros(3), -1.0)


def test_same_randomness_fixes_dropout() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 3)).double().train()
    x, y = torch.randn(16, 5, dtype=DT), torch.randint(0, 3, (16,))
    z = rademacher_probe(net, torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    good = probe_scores(net, CE, x, y, method="finite-difference", probe=z, delta=1e-6, signed=True)
    torch.manual_seed(7)  # the exact score of the same mask: jvp's single forward draws the first mask
    exact = probe_scores(net, CE, x, y, method="exact", probe=z, signed=True)
    torch.testing.assert_close(good, exact, rtol=1e-4, atol=1e-6)
    bad = probe_scores(net, CE, x, y, method="finite-difference", probe=z, delta=1e-6, same_randomness=False)
    assert float(bad.median()) > 1e3 * float(good.abs().median())
    state = torch.get_rng_state()
    probe_scores(net, CE, x, y, method="finite-difference", probe=z)
    assert torch.equal(state, torch.get_rng_state())  # the caller's random stream is not advanced
