"""The interpolating contrast: closed forms against autograd, and Wen et al.'s two biases."""

from __future__ import annotations

import pytest
import torch
from torch.func import hessian, jacrev

from sam_tutorial.theory.zero_loss import TwoProducts, run_zero_loss

DT = torch.float64


def test_grads_and_curvature_on_the_manifold():
    p = TwoProducts((1.0, 0.25))
    x = torch.tensor([2.0, 1.5, 0.5, 0.25 / 1.5], dtype=DT)  # u_j v_j = beta_j
    assert torch.allclose(p(x), torch.zeros(2, dtype=DT))
    off = x + torch.tensor([0.1, -0.2, 0.05, 0.3], dtype=DT)
    assert torch.allclose(p.grads(off), jacrev(p)(off))
    eig = torch.linalg.eigvalsh(hessian(lambda z: p(z).mean())(x))
    assert eig.sum().item() == pytest.approx(p.hessian_trace(x).item())
    assert eig.max().item() == pytest.approx(p.lambda_max(x).item())


def test_full_batch_sam_minimises_lambda_max_and_one_sam_the_trace():
    p = TwoProducts((1.0, 0.25))
    x0 = torch.tensor([2.0, 1.5, 0.55, 0.2], dtype=DT)  # near the manifold, both products unbalanced
    runs = {a: run_zero_loss(p, x0, a, eta=0.05, rho=0.1, n_steps=6000, record_every=6000)
            for a in ("gd", "n-sam", "1-sam")}
    end = {a: r.x[-1] for a, r in runs.items()}
    for r in runs.values():
        assert r.loss[-1] < 1e-4
    lam = {a: p.lambda_max(x).item() for a, x in end.items()}
    tr = {a: p.hessian_trace(x).item() for a, x in end.items()}
    # GD stays where it lands; both SAMs reach the smallest lambda_max the manifold allows (beta_1 = 1)
    assert lam["gd"] > 2.0
    assert lam["n-sam"] == pytest.approx(1.0, abs=0.03) and lam["1-sam"] == pytest.approx(1.0, abs=0.03)
    # only 1-SAM also balances the second product, down to its floor w_2 = 2 beta_2 = 0.5
    assert p.widths(end["1-sam"])[1].item() == pytest.approx(0.5, abs=0.03)
    assert p.widths(end["n-sam"])[1].item() > 1.2
    assert tr["1-sam"] < tr["n-sam"] - 0.4


def test_bad_arguments():
    with pytest.raises(ValueError, match="beta"):
        TwoProducts((1.0, 0.0))
    p = TwoProducts()
    with pytest.raises(ValueError, match="algorithm"):
        run_zero_loss(p, torch.ones(4, dtype=DT), "sgd", eta=0.1, rho=0.1, n_steps=1)
