r"""The sparse-regression diagonal linear network of Andriushchenko & Flammarion (2022, §4), the
setting in which they showed m-sharpness with a closed-form generalisation measure (claim C7).

The model is :math:`\beta = u\odot v` (equivalently :math:`w_+^2 - w_-^2` with
:math:`w_\pm=(u\pm v)/2`) trained on
:math:`\frac1{2n}\|X\beta - y\|^2`; a smaller initialisation scale, or an implicit bias towards it,
gives a sparser :math:`\beta` and a smaller test loss :math:`\|\beta-\beta^*\|^2`.

References:
    M. Andriushchenko, N. Flammarion, *Towards Understanding Sharpness-Aware Minimization*, ICML 2022.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from sam_tutorial.config import check_int, check_nonneg

__all__ = [
    "DIAGONAL_NET_ALGORITHMS",
    "DiagonalNetData",
    "DiagonalNetProblem",
    "DiagonalNetRun",
    "diagonal_net_data",
    "train_diagonal_net",
]


class DiagonalNetData(NamedTuple):
    """Sparse regression data of A&F's diagonal-linear-network experiment.

    Book: chapter 4, "The diagonal linear network (claim C7)".
    """

    features: Tensor
    r"""``[n, d]`` training inputs, rows :math:`N(0, I)`."""

    targets: Tensor
    r"""``[n]``, :math:`y=X\\beta^*` (no noise)."""

    test_features: Tensor
    r"""``[n_test, d]``."""

    test_targets: Tensor
    r"""``[n_test]``."""

    beta_star: Tensor
    r"""``[d]``, ``r``-sparse, non-negative, unit norm."""


def diagonal_net_data(
    n: int = 20,
    dim: int = 30,
    sparsity: int = 3,
    *,
    n_test: int = 1000,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> DiagonalNetData:
    r"""A&F's sparse regression setup (their ``diag_nets_sam.ipynb``: n=20, d=30, r=3, 1000 test points).

    Book: chapter 4, "The diagonal linear network (claim C7)".

    :math:`\beta^*` has ``sparsity`` non-zero entries :math:`|z_j|/\|z\|`, :math:`z\sim N(0,I)`;
    features are standard normal; targets are noiseless. A&F draw with NumPy's global seed, so the
    numbers differ from theirs; the distribution is the same.

    Raises:
        ValueError: for sizes ``< 1`` or ``sparsity > dim``.

    >>> data = diagonal_net_data()
    >>> data.features.shape, int((data.beta_star != 0).sum())
    (torch.Size([20, 30]), 3)
    """
    n, dim, n_test = check_int("n", n), check_int("dim", dim), check_int("n_test", n_test)
    sparsity = check_int("sparsity", sparsity)
    if sparsity > dim:
        raise ValueError(f"sparsity must be <= dim = {dim}, got {sparsity}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    x_test = torch.randn(n_test, dim, generator=gen, dtype=torch.float64)
    beta = torch.randn(dim, generator=gen, dtype=torch.float64)
    beta[sparsity:] = 0
    beta = beta.abs() / beta.norm()
    return DiagonalNetData(*(t.to(dtype) for t in (x, x @ beta, x_test, x_test @ beta, beta)))


class DiagonalNetProblem:
    r"""The diagonal linear network :math:`\beta=u\odot v` on regression data, as a problem in
    :math:`x=(u,v)\in\mathbb R^{2d}` with per-sample loss :math:`f_i=\frac12(x_i^\top(u\odot v)-y_i)^2`
    (so :math:`f` is A&F's :math:`\frac1{2n}\|X\beta-y\|^2`).

    Book: chapter 4, "The diagonal linear network (claim C7)".

    Args:
        features: ``[n, d]``.
        targets: ``[n]``.
    """

    def __init__(self, features: Tensor, targets: Tensor) -> None:
        if features.dim() != 2 or targets.shape != features.shape[:1]:
            raise ValueError(
                f"features must be [n, d] and targets [n]; got {tuple(features.shape)} and "
                f"{tuple(targets.shape)}"
            )
        self.features, self.targets = features, targets
        self.n, self.d = features.shape
        self.dim = 2 * self.d

    def beta(self, x: Tensor) -> Tensor:
        r""":math:`u\odot v` for ``x = (u, v)``, shape ``[..., d]``."""
        return x[..., : self.d] * x[..., self.d :]

    def __call__(self, x: Tensor) -> Tensor:
        return 0.5 * (self.beta(x) @ self.features.T - self.targets).square()


class DiagonalNetRun(NamedTuple):
    """The result of :func:`train_diagonal_net`.

    Book: chapter 4, "The diagonal linear network (claim C7)".
    """

    u: Tensor
    r"""final ``u`` ``[d]``."""

    v: Tensor
    r"""final ``v`` ``[d]``."""

    iterations: Tensor
    r"""``[k]`` iterations at which losses were recorded."""

    train_loss: Tensor
    r"""``[k]``, :math:`\\frac1{2n}\\|X\\beta-y\\|^2`."""

    test_loss: Tensor
    r"""``[k]``, the same on the test set."""


DIAGONAL_NET_ALGORITHMS = ("gd", "n-sam", "1-sam")


def train_diagonal_net(
    data: DiagonalNetData,
    algorithm: str = "gd",
    *,
    rho: float = 0.0,
    lr: float | None = None,
    n_iters: int = 10_000,
    init_scale: float = 0.1,
    n_records: int = 100,
) -> DiagonalNetRun:
    r"""Full-batch GD, n-SAM or 1-SAM on the diagonal linear network, transcribing A&F's
    ``diag_nets.py`` (all perturbations *unnormalised*, :math:`u_0=\text{init\_scale}\cdot\mathbf 1`,
    :math:`v_0=0`):

    Book: chapter 4, "The diagonal linear network (claim C7)".

    * ``"gd"``: :math:`(u,v)\leftarrow(u,v)-\gamma\nabla f`.
    * ``"n-sam"``: gradient of :math:`f` at :math:`(u,v)+\rho\nabla f(u,v)`.
    * ``"1-sam"``: average over samples :math:`k` of :math:`\nabla f_k` at
      :math:`(u,v)+2\rho\,r_k\,(x_k\odot v, x_k\odot u)`, :math:`r_k=x_k^\top\beta-y_k`. The factor 2
      is A&F's: their per-sample ascent uses the gradient of :math:`r_k^2`, not
      :math:`\frac12r_k^2`. In :mod:`sam_tutorial.theory.recursions` terms this is ``"m-usam"`` with
      ``m=1``, ``b=n`` and radius :math:`2\rho`.

    Args:
        data: from :func:`diagonal_net_data`.
        algorithm: ``"gd"``, ``"n-sam"`` or ``"1-sam"``.
        rho: perturbation radius (ignored by ``"gd"``).
        lr: step size :math:`\gamma` (default :math:`5/d`, A&F's choice).
        n_iters: iterations.
        init_scale: :math:`\alpha` in :math:`u_0=\alpha\mathbf 1`.
        n_records: losses are recorded at this many log-spaced iterations (and the last).

    Raises:
        ValueError: for an unknown ``algorithm``, ``rho < 0``, ``n_iters < 1`` or ``n_records < 1``.

    >>> run = train_diagonal_net(diagonal_net_data(), "1-sam", rho=0.05, n_iters=200)
    >>> bool(run.train_loss[-1] < run.train_loss[0])
    True
    """
    if algorithm not in DIAGONAL_NET_ALGORITHMS:
        raise ValueError(
            f"algorithm must be one of {', '.join(map(repr, DIAGONAL_NET_ALGORITHMS))}; got {algorithm!r}"
        )
    check_nonneg("rho", rho)
    n_iters, n_records = check_int("n_iters", n_iters), check_int("n_records", n_records)
    x, y = data.features, data.targets
    n, d = x.shape
    gamma = 5.0 / d if lr is None else lr
    u = torch.full((d,), init_scale, dtype=x.dtype, device=x.device)
    v = torch.zeros_like(u)
    marks = torch.unique(torch.logspace(0, math.log10(n_iters), n_records).round().long())
    marks = torch.cat([torch.zeros(1, dtype=torch.long), marks]).tolist()
    wanted, it_list, train, test = set(marks), [], [], []

    def losses(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        beta = u * v
        return (
            (x @ beta - y).square().mean() / 2,
            (data.test_features @ beta - data.test_targets).square().mean() / 2,
        )

    for it in range(n_iters + 1):
        if it in wanted:
            tr, te = losses(u, v)
            it_list.append(it)
            train.append(tr)
            test.append(te)
        if it == n_iters:
            break
        if algorithm == "1-sam":
            r = x @ (u * v) - y
            u_k = u + 2 * rho * r[:, None] * x * v  # [n, d], one ascent point per sample
            v_k = v + 2 * rho * r[:, None] * x * u
            r_k = (x * u_k * v_k).sum(1) - y
            grad_u = (r_k[:, None] * v_k * x).sum(0) / n
            grad_v = (r_k[:, None] * u_k * x).sum(0) / n
        else:
            if algorithm == "n-sam":
                xerr = x.T @ (x @ (u * v) - y)
                u_a, v_a = u + rho * xerr * v / n, v + rho * xerr * u / n
            else:
                u_a, v_a = u, v
            xerr = x.T @ (x @ (u_a * v_a) - y)
            grad_u, grad_v = xerr * v_a / n, xerr * u_a / n
        u, v = u - gamma * grad_u, v - gamma * grad_v
    return DiagonalNetRun(u, v, torch.tensor(it_list), torch.stack(train), torch.stack(test))
