r"""m-SAM on the diagonal linear network of Andriushchenko & Flammarion, for every m and a grid of radii
at once (claim C7, chapter 4).

:func:`sam_tutorial.theory.diagonal_net.train_diagonal_net` transcribes A&F's code for GD, n-SAM and
1-SAM. This module fills in the micro-batch sizes between them: full-batch descent (:math:`b=n`), the
:math:`n` samples split into :math:`n/m` random micro-batches of size ``m`` at every iteration, each
micro-batch perturbed along its own gradient (unnormalised, as in A&F):

.. math::

    x\leftarrow x-\gamma\,\frac mn\sum_{j=1}^{n/m}\nabla f_{I_j}\big(x+\rho\,e_{I_j}\big),\qquad
    e_I=\nabla f_I(x)\ \text{(m-USAM)}\quad\text{or}\quad
    e_I=\|\nabla f_I(x)\|\,\frac{\xi}{\|\xi\|},\ \xi\sim N(0,I)\ \text{(random direction)}.

Radii are in the book's convention :math:`f_k=\frac12r_k^2`; A&F's :math:`\rho_{AF}` is
:math:`\rho/2`. With ``m = 1`` this is A&F's 1-SAM and with ``m = n`` their n-SAM (tested equalities).
Every radius of ``rhos`` runs in one batched recursion (the rows share the micro-batch partitions).

>>> from sam_tutorial.theory.diagonal_net import diagonal_net_data
>>> run = train_diagonal_msam(diagonal_net_data(), m=5, rhos=[0.0, 0.1], n_iters=100)
>>> run.test_loss.shape
torch.Size([2, 30])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from sam_tutorial.config import check_int
from sam_tutorial.theory.diagonal_net import DiagonalNetData

__all__ = ["DiagonalMSAMRun", "PERTURBATIONS", "train_diagonal_msam"]

PERTURBATIONS = ("gradient", "random")
"""``gradient``: m-USAM; ``random``: a random direction with the norm of the m-USAM perturbation."""


class DiagonalMSAMRun(NamedTuple):
    """The result of :func:`train_diagonal_msam` (one row per radius).

    Book: chapter 4, "The diagonal linear network (claim C7)".
    """

    rhos: Tensor
    """``[R]`` the radii."""

    u: Tensor
    """``[R, d]`` final :math:`u`."""

    v: Tensor
    """``[R, d]`` final :math:`v`."""

    iterations: Tensor
    """``[k]`` where the losses were recorded (log-spaced, the first and the last included)."""

    train_loss: Tensor
    r"""``[R, k]`` :math:`\frac1{2n}\|X\beta-y\|^2`."""

    test_loss: Tensor
    """``[R, k]`` the same on the test set."""


def train_diagonal_msam(
    data: DiagonalNetData,
    m: int,
    rhos: Sequence[float],
    *,
    perturbation: str = "gradient",
    lr: float | None = None,
    n_iters: int = 10_000,
    init_scale: float = 0.1,
    n_records: int = 40,
    seed: int = 0,
) -> DiagonalMSAMRun:
    r"""m-USAM (or the random-direction baseline) on the diagonal linear network, one row per radius.

    Book: chapter 4, "The diagonal linear network (claim C7)".

    Args:
        data: from :func:`~sam_tutorial.theory.diagonal_net.diagonal_net_data`.
        m: micro-batch size, dividing :math:`n`.
        rhos: radii :math:`\rho\ge0` (book convention; ``0`` is GD).
        perturbation: one of :data:`PERTURBATIONS`.
        lr: step size :math:`\gamma` (default :math:`5/d`, A&F's).
        n_iters: iterations.
        init_scale: :math:`u_0=\alpha\mathbf 1`, :math:`v_0=0`.
        n_records: losses are recorded at about this many log-spaced iterations.
        seed: seed of the partitions and of the random directions.

    Raises:
        ValueError: for ``m`` not dividing ``n``, a negative radius or an unknown ``perturbation``.
    """
    x, y = data.features, data.targets
    n, d = x.shape
    m = check_int("m", m)
    if n % m:
        raise ValueError(f"m must divide n = {n}, got {m}")
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {PERTURBATIONS}; got {perturbation!r}")
    rho = torch.tensor(list(rhos), dtype=x.dtype)
    if rho.ndim != 1 or len(rho) == 0 or bool((rho < 0).any()):
        raise ValueError(f"rhos must be a non-empty list of radii >= 0, got {list(rhos)!r}")
    n_iters = check_int("n_iters", n_iters)
    gamma = 5.0 / d if lr is None else lr
    gen = torch.Generator().manual_seed(seed)
    u = torch.full((len(rho), d), init_scale, dtype=x.dtype)
    v = torch.zeros_like(u)
    marks = torch.logspace(0, math.log10(n_iters), n_records).round().long()
    wanted = sorted({0, n_iters, *marks.tolist()})
    records, train, test = set(wanted), [], []
    r_col = rho[:, None, None]  # [R, 1, 1]
    for it in range(n_iters + 1):
        if it in records:
            beta = u * v
            train.append((beta @ x.T - y).square().mean(-1) / 2)
            test.append((beta @ data.test_features.T - data.test_targets).square().mean(-1) / 2)
        if it == n_iters:
            break
        perm = torch.randperm(n, generator=gen) if 1 < m < n else torch.arange(n)
        xb, yb = x[perm].reshape(n // m, m, d), y[perm].reshape(n // m, m)  # [J, m, d], [J, m]
        res = torch.einsum("jmd,rd->rjm", xb, u * v) - yb  # [R, J, m]
        eu = torch.einsum("rjm,jmd->rjd", res, xb) * v[:, None] / m  # micro-batch gradients [R, J, d]
        ev = torch.einsum("rjm,jmd->rjd", res, xb) * u[:, None] / m
        if perturbation == "random":
            z = torch.randn(*eu.shape[:2], 2 * d, generator=gen, dtype=x.dtype)
            scale = torch.cat([eu, ev], -1).norm(dim=-1, keepdim=True) / z.norm(dim=-1, keepdim=True)
            eu, ev = z[..., :d] * scale, z[..., d:] * scale
        up, vp = u[:, None] + r_col * eu, v[:, None] + r_col * ev  # [R, J, d]
        rp = torch.einsum("jmd,rjd->rjm", xb, up * vp) - yb
        gu = (torch.einsum("rjm,jmd->rjd", rp, xb) * vp).mean(1) / m
        gv = (torch.einsum("rjm,jmd->rjd", rp, xb) * up).mean(1) / m
        u, v = u - gamma * gu, v - gamma * gv
    return DiagonalMSAMRun(rho, u, v, torch.tensor(wanted), torch.stack(train, 1), torch.stack(test, 1))
