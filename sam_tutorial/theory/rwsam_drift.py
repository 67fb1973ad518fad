r"""RW-(U)SAM's mean update and its first-order drift on a toy problem, by exact enumeration of batches.

RW-SAM (paper §5, reconstructed) builds its perturbation from Gibbs-weighted per-sample gradients,
:math:`g_P=\sum_{i\in\gamma}p_i\nabla f_i`, :math:`p=\operatorname{softmax}(\lambda s)` with the scores
:math:`s_i` (here the exact per-sample gradient norms) treated as constants, and then descends either the
uniform batch loss or the same weighted loss (UNCONFIRMED which; both are options):

.. code-block:: text

    D_γ(x) = ∇f_w(x + ρ N(g_P(x))),   w = 1/B (uniform descent) or w = p (weighted descent),
    N(g) = g/‖g‖ (RW-SAM) or g (RW-USAM).

To first order in ρ, :math:`D_\gamma = g_w + \rho H_w N(g_P) + O(\rho^2)` with
:math:`H_w=\sum_j w_j\nabla^2 f_j` (:func:`first_order_direction`). For weights that do not depend on
the samples' values and batches drawn with replacement, the mean of the USAM form has a closed form
(:func:`fixed_weights_drift`):

.. math::

    \mathbb E D = \nabla f + \rho\big[\nabla^2 f\,\nabla f
    + c\,\tfrac12\nabla\operatorname{tr}V\big] + O(\rho^2),
    \qquad c=\textstyle\sum_b w_b p_b ,

so uniform descent keeps SAM's coefficient :math:`c = 1/B` whatever :math:`p` is, and weighted descent
gets :math:`c=\sum_b p_b^2 = 1/m_{\rm eff}`. With norm-dependent (Gibbs) weights there is no closed form;
:func:`expected_rw_update` enumerates every batch.

:class:`NoisyValley` is a non-interpolating toy on which :math:`f` is flat along a line of minima while
:math:`\operatorname{tr}V` is not, so the component of the mean update along the line is the part of the drift
that regularises :math:`\operatorname{tr}V`.

>>> from sam_tutorial.theory.problems import LogisticProblem, logistic_data
>>> p = LogisticProblem(*logistic_data(n=6, dim=2, seed=0))
>>> x = torch.tensor([0.3, -0.2], dtype=torch.float64)
>>> d = expected_rw_update(p, x, rho=0.0, lam=1.0, b=3, descent="uniform")
>>> torch.allclose(d.direction, torch.func.grad(lambda y: p(y).mean())(x))
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.func import grad, jacrev, jvp, vmap

from sam_tutorial.config import check_int, check_nonneg
from sam_tutorial.sgn.batches import batch_distribution
from sam_tutorial.sgn.curvature_noise import half_grad_trace_V
from sam_tutorial.sgn.variance import sgn_trace

__all__ = [
    "DESCENTS",
    "NoisyValley",
    "RWUpdate",
    "expected_m_update",
    "expected_rw_update",
    "expected_fixed_weights_update",
    "first_order_direction",
    "fixed_weights_drift",
    "gibbs_batch_weights",
    "rw_direction",
]

ProblemFn = Callable[[Tensor], Tensor]

DESCENTS = ("uniform", "weighted")
"""The descent pass, the uniform batch mean (the package default) or the Gibbs weights (UNCONFIRMED)."""


def _check(rho: float, lam: float, descent: str) -> None:
    check_nonneg("rho", rho)
    check_nonneg("lam", lam)
    if descent not in DESCENTS:
        raise ValueError(f"descent must be one of {', '.join(DESCENTS)}; got {descent!r}")


def gibbs_batch_weights(rows: Tensor, scores: Tensor, lam: float) -> Tensor:
    r"""Gibbs weights for each batch row: :math:`p_i\propto c_i\,e^{\lambda s_i}` over the batch's members.

    Book: chapter 5, "What RW-SAM regularises"; paper: §5.

    Args:
        rows: ``[N, n]`` batch rows, ``count_i / b`` (as in
            :class:`~sam_tutorial.sgn.batches.BatchDistribution`).
        scores: ``[n]`` per-sample scores :math:`s_i`.
        lam: inverse temperature :math:`\lambda\ge0` (``0``: the batch row itself).

    Returns:
        ``[N, n]`` rows summing to 1, zero outside each batch. A sample drawn twice counts twice.

    >>> gibbs_batch_weights(torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([0.0, 1.0, 5.0]), 0.0)
    tensor([[0.5000, 0.5000, 0.0000]])
    """
    logits = torch.where(rows > 0, rows.log() + lam * scores, torch.full_like(rows, -math.inf))
    return torch.softmax(logits, dim=-1)


def _weighted_grad(losses: ProblemFn) -> Callable[[Tensor, Tensor], Tensor]:
    return grad(lambda x, w: w @ losses(x))


def _ascent(losses: ProblemFn, x: Tensor, perturb: Tensor, normalize: bool) -> Tensor:
    e = _weighted_grad(losses)(x, perturb)
    return e / e.norm().clamp_min(torch.finfo(e.dtype).tiny) if normalize else e


def rw_direction(losses: ProblemFn, x: Tensor, descent: Tensor, perturb: Tensor, *, rho: float,
                 normalize: bool = True) -> Tensor:
    r"""One step's direction :math:`\nabla f_w(x+\rho N(g_p))` for weight rows ``descent`` (w) and
    ``perturb`` (p).

    Book: chapter 5, "What RW-SAM regularises"; paper: §5.
    """
    return _weighted_grad(losses)(x + rho * _ascent(losses, x, perturb, normalize), descent)


def first_order_direction(losses: ProblemFn, x: Tensor, descent: Tensor, perturb: Tensor, *, rho: float,
                          normalize: bool = True) -> Tensor:
    r""":math:`g_w + \rho H_w N(g_p)`: the direction to first order in ρ (one Hessian-vector product).

    Book: chapter 5, "What RW-SAM regularises"; paper: §5.
    """
    e = _ascent(losses, x, perturb, normalize)
    g, hv = jvp(lambda y: _weighted_grad(losses)(y, descent), (x,), (e,))[:2]
    return g + rho * hv


class RWUpdate(NamedTuple):
    """The mean update of RW-(U)SAM over the batch law.

    Book: chapter 5, "What RW-SAM regularises"; paper: §5.
    """

    direction: Tensor
    """``[d]``: :math:`\\mathbb E_\\gamma D_\\gamma(x)`."""

    mean_sum_sq: Tensor
    """:math:`\\mathbb E_\\gamma\\sum_i p_i^2`; its inverse is the effective batch :math:`m_{\\rm eff}`."""

    exact: bool
    """Whether every batch was enumerated."""


def per_sample_norms(losses: ProblemFn, x: Tensor) -> Tensor:
    """The exact per-sample gradient norms ``[n]`` (rows of the Jacobian of the per-sample losses)."""
    return jacrev(losses)(x).norm(dim=-1)


def expected_rw_update(
    losses: ProblemFn,
    x: Tensor,
    *,
    rho: float,
    lam: float,
    b: int,
    descent: str = "uniform",
    normalize: bool = True,
    first_order: bool = False,
    scores: Tensor | None = None,
    replacement: bool = False,
    max_batches: int = 4096,
) -> RWUpdate:
    r"""Mean RW-(U)SAM update over uniformly drawn batches of size ``b`` (exact when they can be enumerated).

    Book: chapter 5, "What RW-SAM regularises"; paper: §5.

    Args:
        losses: the problem, ``x [d] -> [n]``.
        x: parameters ``[d]``.
        rho: radius ρ >= 0.
        lam: inverse temperature λ >= 0 (``0``: SAM/USAM).
        b: batch size.
        descent: ``"uniform"`` or ``"weighted"`` (:data:`DESCENTS`).
        normalize: RW-SAM (``True``) or RW-USAM (``False``).
        first_order: average :func:`first_order_direction` instead of the exact direction.
        scores: per-sample scores (default: the exact gradient norms at ``x``).
        replacement: the sampling scheme of the batch.
        max_batches: enumeration limit (beyond it a Monte Carlo sample, see
            :func:`~sam_tutorial.sgn.batches.batch_distribution`).

    Raises:
        ValueError: for a bad ``rho``, ``lam`` or ``descent`` (and bad sizes, from the batch law).
    """
    _check(rho, lam, descent)
    n = losses(x).shape[-1]
    dist = batch_distribution(n, b, replacement=replacement, max_batches=max_batches, dtype=x.dtype,
                              device=x.device)
    s = per_sample_norms(losses, x) if scores is None else scores.to(x)
    p = gibbs_batch_weights(dist.weights, s, lam)
    w = p if descent == "weighted" else dist.weights
    step = first_order_direction if first_order else rw_direction
    dirs = vmap(lambda dw, dp: step(losses, x, dw, dp, rho=rho, normalize=normalize))(w, p)
    return RWUpdate(dist.probs @ dirs, dist.probs @ p.square().sum(-1), dist.exact)


def expected_m_update(losses: ProblemFn, x: Tensor, *, rho: float, m: int, normalize: bool = True,
                      first_order: bool = False, max_batches: int = 4096) -> Tensor:
    r"""Mean m-(U)SAM update: one micro-batch of size ``m`` (without replacement) per perturbation.

    Book: chapter 5, "A valley of minima with varying noise".
    """
    n = losses(x).shape[-1]
    dist = batch_distribution(n, m, max_batches=max_batches, dtype=x.dtype, device=x.device)
    step = first_order_direction if first_order else rw_direction
    return dist.probs @ vmap(lambda d: step(losses, x, d, d, rho=rho, normalize=normalize))(dist.weights)


def expected_fixed_weights_update(losses: ProblemFn, x: Tensor, *, rho: float, perturb: Tensor,
                                  descent: Tensor, normalize: bool = False) -> Tensor:
    r"""Mean update with weights fixed per batch *position*, over all :math:`n^b` ordered batches drawn
    with replacement (``perturb`` and ``descent`` are ``[b]``, each summing to 1).

    Book: chapter 5, "What RW-SAM regularises"; paper: §5.
    """
    n, b = losses(x).shape[-1], perturb.numel()
    if descent.shape != perturb.shape:
        raise ValueError(f"perturb and descent must both be [b]; got {tuple(perturb.shape)}, "
                         f"{tuple(descent.shape)}")
    index = torch.tensor(list(itertools.product(range(n), repeat=b)), device=x.device)
    rows = torch.zeros(index.shape[0], n, dtype=x.dtype, device=x.device)
    p = rows.scatter_add(1, index, perturb.to(x).expand(index.shape[0], b))
    w = rows.scatter_add(1, index, descent.to(x).expand(index.shape[0], b))
    return vmap(lambda dw, dp: rw_direction(losses, x, dw, dp, rho=rho, normalize=normalize))(w, p).mean(0)


def fixed_weights_drift(losses: ProblemFn, x: Tensor, *, rho: float, perturb: Tensor,
                        descent: Tensor) -> tuple[Tensor, float]:
    r"""The closed form :math:`\nabla f+\rho[\nabla^2f\,\nabla f+c\,\tfrac12\nabla\operatorname{tr}V]` of the
    mean RW-USAM update with fixed position weights (with replacement), and :math:`c=\sum_b w_bp_b`.

    Book: chapter 5, "What RW-SAM regularises"; paper: §5.
    """
    f = lambda y: losses(y).mean()  # noqa: E731
    g = grad(f)(x)
    hg = jvp(grad(f), (x,), (g,))[1]
    c = float((perturb * descent).sum())
    return g + rho * (hg + c * half_grad_trace_V(losses, x)), c


class NoisyValley:
    r"""Per-sample losses :math:`f_i(u,v)=\tfrac12 e^{au}\big(\|v-c_i\|^2-\sigma^2\big)`,
    :math:`v\in\mathbb R^k`, centres :math:`c_i` with mean 0 and :math:`\sigma^2=\frac1n\sum_i\|c_i\|^2`.

    Book: chapter 5, "A valley of minima with varying noise".

    Then :math:`f=\tfrac12e^{au}\|v\|^2`: every point :math:`(u,0)` is a minimum with :math:`f=0`, but no
    :math:`f_i` is minimal there (not interpolating), and along the valley
    :math:`\operatorname{tr}V=e^{2au}\big(\sigma^2+\tfrac{a^2}4\operatorname{Var}_i\|c_i\|^2\big)` grows with
    :math:`u`. Coordinates: ``x = (u, v_1, ..., v_k)``.

    Args:
        n: number of samples.
        k: dimension of ``v``.
        a: growth rate of the curvature along the valley.
        seed: seed of the centres (standard normal, then centred).
        dtype: dtype of the problem.
    """

    def __init__(self, n: int = 12, k: int = 3, *, a: float = 1.0, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        check_int("n", n, 2)
        check_int("k", k)
        c = torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.centres = (c - c.mean(0)).to(dtype)
        self.sigma2 = self.centres.square().sum(-1).mean()
        self.a, self.n, self.k = float(a), n, k

    def __call__(self, x: Tensor) -> Tensor:
        u, v = x[..., :1], x[..., 1:]
        return 0.5 * torch.exp(self.a * u) * ((v.unsqueeze(-2) - self.centres).square().sum(-1) - self.sigma2)

    def point(self, u: float) -> Tensor:
        """The minimum ``(u, 0, ..., 0)`` on the valley."""
        x = torch.zeros(self.k + 1, dtype=self.centres.dtype)
        x[0] = u
        return x

    def trace_V(self, x: Tensor) -> Tensor:
        """:math:`\\operatorname{tr}V(x)` from the per-sample gradients."""
        return sgn_trace(jacrev(self)(x))

    def trace_V_closed_form(self, u: float) -> float:
        """:math:`e^{2au}(\\sigma^2+\\frac{a^2}4\\operatorname{Var}\\|c_i\\|^2)` on the valley."""
        d2 = self.centres.square().sum(-1)
        return float(math.exp(2 * self.a * u) * (self.sigma2 + self.a**2 / 4 * d2.var(correction=0)))
