"""n-SAM: the full-data gradient builds the perturbation; with data = the batch it is SAM."""

from __future__ import annotations

import pytest
import torch

from sam_tutorial.optim import NSAM, SAM
from tests.optim.helpers import (
    CE,
    assert_params_equal,
    batch,
    half_squared,
    lsq_grad,
    mlp,
    regression,
    sgd,
)


@pytest.mark.parametrize("chunk_size", [None, 5, 16])
@pytest.mark.parametrize("normalize", [True, False])
def test_data_equal_to_the_batch_is_sam(chunk_size: int | None, normalize: bool) -> None:
    x, y = batch()
    a, b = mlp(), mlp()
    opt_a = NSAM(a, sgd(a), rho=0.1, data=(x, y), normalize=normalize, chunk_size=chunk_size)
    opt_b = SAM(b, sgd(b), rho=0.1, normalize=normalize)
    for _ in range(3):
        sa, sb = opt_a.step(x, y, CE), opt_b.step(x, y, CE)
        for u, v in zip(sa, sb):
            torch.testing.assert_close(u, v, atol=1e-12, rtol=0)
    assert_params_equal(a, b, atol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_n_usam_and_n_sam_match_the_closed_form(normalize: bool) -> None:
    """w − η ∇f_γ(w + ρ ∇f(w)[/‖∇f(w)‖]): full gradient for e, batch gradient for the descent."""
    model, x, y = regression(n=12)
    w = model.weight.detach().clone().squeeze(0)
    lr, rho = 0.1, 0.3
    g = lsq_grad(w, x, y)
    e = rho * g / (g.norm() if normalize else 1.0)
    xb, yb = x[:4], y[:4]
    expected = w - lr * lsq_grad(w + e, xb, yb)
    opt = NSAM(model, torch.optim.SGD(model.parameters(), lr=lr), rho=rho, data=(x, y),
               normalize=normalize, chunk_size=5)
    stats = opt.step(xb, yb, half_squared)
    torch.testing.assert_close(model.weight.squeeze(0), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(stats.loss, 0.5 * ((x @ w - y) ** 2).mean(), atol=1e-12, rtol=0)
