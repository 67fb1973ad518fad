"""m-SAM on the diagonal linear network: its ends are A&F's 1-SAM and n-SAM, rho = 0 is GD."""

from __future__ import annotations

import pytest
import torch

from sam_tutorial.theory.diagonal_msam import train_diagonal_msam
from sam_tutorial.theory.diagonal_net import diagonal_net_data, train_diagonal_net


@pytest.fixture(scope="module")
def data():
    return diagonal_net_data(seed=1)


def test_ends_of_the_m_range_are_af_one_sam_n_sam_and_gd(data):
    run = train_diagonal_msam(data, 1, [0.0, 0.1], n_iters=300)
    one = train_diagonal_net(data, "1-sam", rho=0.05, n_iters=300)  # rho_AF = rho / 2
    gd = train_diagonal_net(data, "gd", n_iters=300)
    assert torch.allclose(run.u[1], one.u, atol=1e-13) and torch.allclose(run.v[1], one.v, atol=1e-13)
    assert torch.allclose(run.u[0], gd.u, atol=1e-13)
    full = train_diagonal_msam(data, data.features.shape[0], [0.07], n_iters=300)
    nsam = train_diagonal_net(data, "n-sam", rho=0.07, n_iters=300)
    assert torch.allclose(full.u[0], nsam.u, atol=1e-13)
    assert torch.allclose(full.test_loss[0, -1], nsam.test_loss[-1])


def test_rows_are_independent_runs(data):
    both = train_diagonal_msam(data, 5, [0.05, 0.2], n_iters=200, seed=4)
    one = train_diagonal_msam(data, 5, [0.2], n_iters=200, seed=4)
    assert torch.allclose(both.u[1], one.u[0], atol=1e-13)


def test_random_directions_cancel_to_first_order(data):
    # One step from the same point. The gradient perturbation moves the step by O(rho) in a fixed
    # direction; a random direction of the same norm moves it by O(rho) too, but its mean over draws
    # is O(rho^2): the first-order (m-sharpness) effect is the alignment, not the size.
    rho, u0 = 1e-3, 1.0
    gd = train_diagonal_msam(data, 1, [0.0], n_iters=1, n_records=2, init_scale=u0)
    aligned = (train_diagonal_msam(data, 1, [rho], n_iters=1, n_records=2, init_scale=u0).u - gd.u).norm()
    draws = torch.stack([train_diagonal_msam(data, 1, [rho], n_iters=1, n_records=2, init_scale=u0,
                                             perturbation="random", seed=s).u[0] for s in range(400)])
    single = (draws - gd.u).norm(dim=1)
    assert aligned > 0
    assert single.mean() > 0.05 * aligned  # each random step is moved ...
    assert (draws.mean(0) - gd.u[0]).norm() < 0.25 * single.mean()  # ... but not on average


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="divide"):
        train_diagonal_msam(data, 3, [0.1], n_iters=1)
    with pytest.raises(ValueError, match="rhos"):
        train_diagonal_msam(data, 1, [-0.1], n_iters=1)
    with pytest.raises(ValueError, match="perturbation"):
        train_diagonal_msam(data, 1, [0.1], n_iters=1, perturbation="adversarial")
