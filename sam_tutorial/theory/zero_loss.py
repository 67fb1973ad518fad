r"""The interpolating contrast of chapter 4: where every per-sample loss can reach zero.

On a manifold of zero training loss every per-sample gradient vanishes, so :math:`V=0` and the
:math:`\operatorname{tr}V` force of the m-variants is gone. What remains for *normalised* SAM is a
higher-order bias along the manifold (Wen, Ma & Li 2023): full-batch SAM (n-SAM) moves towards small
:math:`\lambda_{\max}` of the Hessian, SAM with one sample per perturbation (1-SAM) towards small
:math:`\operatorname{tr}H`.

The smallest problem that tells the two apart: two samples, two independent products,

.. math::

    f_j(x)=\tfrac12\,(u_jv_j-\beta_j)^2,\qquad x=(u_1,u_2,v_1,v_2),\quad j=1,2 .

The zero-loss manifold is :math:`u_jv_j=\beta_j`. On it the Hessian of :math:`f=\frac12(f_1+f_2)` has
the eigenvalues :math:`w_j/2` with :math:`w_j=u_j^2+v_j^2\ge2|\beta_j|` (and zeros), so
:math:`\operatorname{tr}H=(w_1+w_2)/2` and :math:`\lambda_{\max}=\max_jw_j/2`. Reducing
:math:`\lambda_{\max}` only asks to shrink the larger :math:`w_j`; reducing the trace asks to shrink both.

>>> p = TwoProducts(beta=(1.0, 0.25))
>>> x = torch.tensor([1.0, 0.5, 1.0, 0.5], dtype=torch.float64)
>>> p(x).tolist(), p.hessian_trace(x).item(), p.lambda_max(x).item()
([0.0, 0.0], 1.25, 1.0)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from sam_tutorial.config import check_int

__all__ = ["TwoProducts", "ZeroLossRun", "run_zero_loss"]


class TwoProducts:
    r"""Two samples :math:`f_j=\frac12(u_jv_j-\beta_j)^2`, a callable ``x [..., 4] -> [..., 2]`` with
    ``x = (u_1, u_2, v_1, v_2)``.

    Book: chapter 4, "The interpolating contrast".

    Args:
        beta: :math:`(\beta_1,\beta_2)`, both non-zero.
    """

    def __init__(self, beta: tuple[float, float] = (1.0, 0.25)) -> None:
        if len(beta) != 2 or any(b == 0 for b in beta):
            raise ValueError(f"beta must be two non-zero numbers, got {beta!r}")
        self.beta = torch.tensor(beta, dtype=torch.float64)
        self.n, self.dim = 2, 4

    def __call__(self, x: Tensor) -> Tensor:
        return 0.5 * (x[..., :2] * x[..., 2:] - self.beta.to(x)).square()

    def grads(self, x: Tensor) -> Tensor:
        r"""Per-sample gradients ``[..., 2, 4]``: sample :math:`j` moves only :math:`(u_j,v_j)`."""
        u, v = x[..., :2], x[..., 2:]
        r = u * v - self.beta.to(x)
        eye = torch.eye(2, dtype=x.dtype, device=x.device)
        return torch.cat([(r * v)[..., :, None] * eye, (r * u)[..., :, None] * eye], -1)

    def widths(self, x: Tensor) -> Tensor:
        r""":math:`w_j=u_j^2+v_j^2`, shape ``[..., 2]``."""
        return x[..., :2].square() + x[..., 2:].square()

    def hessian_trace(self, x: Tensor) -> Tensor:
        r""":math:`\operatorname{tr}H` on the manifold, :math:`(w_1+w_2)/2`."""
        return self.widths(x).sum(-1) / 2

    def lambda_max(self, x: Tensor) -> Tensor:
        r""":math:`\lambda_{\max}(H)` on the manifold, :math:`\max_jw_j/2`."""
        return self.widths(x).amax(-1) / 2


class ZeroLossRun(NamedTuple):
    """The result of :func:`run_zero_loss`.

    Book: chapter 4, "The interpolating contrast".
    """

    steps: Tensor
    """``[k]`` the recorded iterations."""

    x: Tensor
    """``[k, 4]`` the iterates there."""

    loss: Tensor
    """``[k]`` the training loss there."""


def run_zero_loss(
    problem: TwoProducts,
    x0: Tensor,
    algorithm: str,
    *,
    eta: float,
    rho: float,
    n_steps: int,
    record_every: int = 100,
) -> ZeroLossRun:
    r"""Full-batch descent with a normalised perturbation: ``"gd"``, ``"n-sam"`` (one perturbation
    :math:`\rho\nabla f/\|\nabla f\|`) or ``"1-sam"`` (each sample its own
    :math:`\rho\nabla f_j/\|\nabla f_j\|`, the gradients at the perturbed points averaged).

    Book: chapter 4, "The interpolating contrast".

    Raises:
        ValueError: for an unknown algorithm, ``eta <= 0`` or ``rho < 0``.
    """
    if algorithm not in ("gd", "n-sam", "1-sam"):
        raise ValueError(f"algorithm must be 'gd', 'n-sam' or '1-sam'; got {algorithm!r}")
    if not eta > 0 or not rho >= 0:
        raise ValueError(f"need eta > 0 and rho >= 0, got eta={eta!r}, rho={rho!r}")
    n_steps, record_every = check_int("n_steps", n_steps, 0), check_int("record_every", record_every)
    tiny = torch.finfo(x0.dtype).tiny
    x = x0.clone()
    steps, xs = [0], [x]
    for k in range(1, n_steps + 1):
        g = problem.grads(x)  # [2, 4]
        if algorithm == "gd":
            d = g.mean(0)
        elif algorithm == "n-sam":
            full = g.mean(0)
            d = problem.grads(x + rho * full / full.norm().clamp_min(tiny)).mean(0)
        else:
            e = g / g.norm(dim=-1, keepdim=True).clamp_min(tiny)  # [2, 4], one per sample
            # row j: the gradient of sample j at its own perturbed point
            d = torch.diagonal(problem.grads(x + rho * e), dim1=0, dim2=1).T.mean(0)
        x = x - eta * d
        if k % record_every == 0 or k == n_steps:
            steps.append(k)
            xs.append(x)
    xt = torch.stack(xs)
    return ZeroLossRun(torch.tensor(steps), xt, problem(xt).mean(-1))
