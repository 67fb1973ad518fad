r"""The law of a mini-batch gradient: the noise coefficient :math:`c_B`, the distribution of
index sets, and the exact first two moments of :math:`g_\gamma` (paper §3.1, claims C1 and C2).

A mini-batch gradient :math:`g_\gamma=\frac1{|\gamma|}\sum_{i\in\gamma}\nabla f_i` has
:math:`\operatorname{Cov}(g_\gamma)=c_B V`, hence (C1)

.. math::

    \mathbb E\|g_\gamma\|^2 = \|\nabla f\|^2 + c_B\operatorname{tr}V,\qquad
    c_B=\tfrac1B\ \text{(with replacement)},\quad c_B=\tfrac{n-B}{B(n-1)}\ \text{(without)}.

Everything here takes the per-sample gradients ``[n, P]`` (or nothing but sizes): no model.

>>> batch_noise_coefficient(10, 10), batch_noise_coefficient(10, 1)
(0.0, 1.0)
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import Tensor

from sam_tutorial.config import check_float_dtype, check_int
from sam_tutorial.sgn.monte_carlo import sample_batches
from sam_tutorial.sgn.variance import _check_grads, sgn_trace

__all__ = [
    "BatchDistribution",
    "BatchGradMoments",
    "batch_distribution",
    "batch_grad_moments",
    "batch_noise_coefficient",
    "expected_sq_batch_grad_norm",
]


def batch_noise_coefficient(n: int, b: int, *, replacement: bool = False) -> float:
    r"""The factor :math:`c_B` in :math:`\operatorname{Cov}(g_\gamma)=c_B V` for batches of size ``b``.

    Book: chapter 2, "Mini-batch noise, with and without replacement"; paper: the covariance c_B V of claim
    C1.

    :math:`c_B=1/b` when the ``b`` indices are drawn with replacement, and
    :math:`c_B=\frac{n-b}{b(n-1)}` for a uniformly random ``b``-subset (the paper's "fixed
    cardinality" sampling; which one its theorems assume is UNCONFIRMED, hence the option).

    Args:
        n: number of samples.
        b: batch size; ``1 <= b``, and ``b <= n`` without replacement.
        replacement: sampling with replacement.

    Raises:
        ValueError: for ``n < 1``, ``b < 1``, or ``b > n`` without replacement.

    >>> batch_noise_coefficient(10, 4), batch_noise_coefficient(10, 4, replacement=True)
    (0.16666666666666666, 0.25)
    """
    _check_nb(n, b, replacement)
    if replacement:
        return 1.0 / b
    return 0.0 if n == 1 else (n - b) / (b * (n - 1))


def _check_nb(n: int, b: int, replacement: bool) -> None:
    check_int("n", n)
    hi = "" if replacement else f", and b <= n = {n} without replacement"
    if isinstance(b, bool) or not isinstance(b, int) or b < 1 or (not replacement and b > n):
        raise ValueError(f"b must be an integer >= 1{hi}; got {b!r}")


class BatchDistribution(NamedTuple):
    """Batches as rows of weights: the batch mean of per-sample values ``a`` is ``weights @ a``.

    Book: chapter 2, "Mini-batch noise, with and without replacement"; paper: the covariance c_B V of claim
    C1.
    """

    weights: Tensor
    """``[N, n]``; row ``s`` holds ``count_i / b`` for batch ``s``."""

    probs: Tensor
    """``[N]``, the probability of each row (they sum to 1)."""

    exact: bool
    """``True`` if the rows enumerate every batch, ``False`` for a Monte Carlo sample."""


def batch_distribution(
    n: int,
    b: int,
    *,
    replacement: bool = False,
    max_batches: int = 4096,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> BatchDistribution:
    r"""The law of a uniformly sampled batch of size ``b`` out of ``n`` samples.

    Book: chapter 2, "Mini-batch noise, with and without replacement"; paper: the covariance c_B V of claim
    C1.

    Enumerates every batch (``b``-subsets without replacement; multisets with their multinomial
    probabilities :math:`\frac{b!}{\prod_i c_i!\,n^b}` with replacement) when there are at most
    ``max_batches`` of them; otherwise draws ``max_batches`` batches at random, each with
    probability ``1/max_batches``.

    Args:
        n: number of samples.
        b: batch size.
        replacement: sample indices with replacement.
        max_batches: the most rows returned.
        generator: CPU generator for the Monte Carlo case (default: a fresh one seeded with 0).
        dtype: dtype of ``weights`` and ``probs``.
        device: where to put them.

    Returns:
        :class:`BatchDistribution`.

    Raises:
        ValueError: for bad ``n``/``b`` (see :func:`batch_noise_coefficient`) or ``max_batches < 1``.

    >>> d = batch_distribution(3, 2)
    >>> d.weights
    tensor([[0.5000, 0.5000, 0.0000],
            [0.5000, 0.0000, 0.5000],
            [0.0000, 0.5000, 0.5000]])
    >>> d.exact
    True
    """
    _check_nb(n, b, replacement)
    check_float_dtype("dtype", dtype)
    check_int("max_batches", max_batches)
    count = math.comb(n + b - 1, b) if replacement else math.comb(n, b)
    if count <= max_batches:
        combos = (
            itertools.combinations_with_replacement(range(n), b)
            if replacement
            else itertools.combinations(range(n), b)
        )
        index = torch.tensor(list(combos), dtype=torch.long).reshape(count, b)
        counts = torch.zeros(count, n, dtype=torch.float64).scatter_add_(
            1, index, torch.ones(count, b, dtype=torch.float64)
        )
        if replacement:
            log_p = math.lgamma(b + 1) - torch.lgamma(counts + 1).sum(1) - b * math.log(n)
            probs = log_p.exp()
        else:
            probs = torch.full((count,), 1.0 / count, dtype=torch.float64)
        exact = True
    else:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        index = sample_batches(n, b, max_batches, replacement=replacement, generator=gen)
        counts = torch.zeros(max_batches, n, dtype=torch.float64).scatter_add_(
            1, index, torch.ones(max_batches, b, dtype=torch.float64)
        )
        probs = torch.full((max_batches,), 1.0 / max_batches, dtype=torch.float64)
        exact = False
    return BatchDistribution(
        (counts / b).to(dtype=dtype, device=device), probs.to(dtype=dtype, device=device), exact
    )


class BatchGradMoments(NamedTuple):
    r"""Moments of the mini-batch gradient norm over the batch law.

    Book: chapter 2, "Claim C1: the second moment of a stochastic gradient"; paper: claims C1-C2, Prop. 3.9.
    """

    sq_norm: Tensor
    r""":math:`\mathbb E\|g_\gamma\|^2` (0-d)."""

    norm: Tensor
    r""":math:`\mathbb E\|g_\gamma\|` (0-d)."""

    exact: bool
    r"""``True`` if every batch was enumerated, ``False`` for a Monte Carlo estimate."""


def batch_grad_moments(
    grads: Tensor,
    b: int,
    *,
    replacement: bool = False,
    max_batches: int = 4096,
    generator: torch.Generator | None = None,
) -> BatchGradMoments:
    r""":math:`\mathbb E\|g_\gamma\|^2` and :math:`\mathbb E\|g_\gamma\|` for batches of size ``b``.

    Book: chapter 2, "Claim C1: the second moment of a stochastic gradient"; paper: claims C1-C2, Prop. 3.9.

    Uses the Gram matrix :math:`K=GG^\top`: for a batch with weight row :math:`w`,
    :math:`\|g_\gamma\|^2=w^\top K w`, so the cost is independent of :math:`P` after one
    :math:`n\times n` product. :math:`\mathbb E\|g_\gamma\|` is non-increasing in ``b`` (Prop 3.9,
    claim C2); :math:`\mathbb E\|g_\gamma\|^2` equals :func:`expected_sq_batch_grad_norm` (C1).

    Args:
        grads: per-sample gradients ``[n, P]``.
        b: batch size.
        replacement: sample with replacement.
        max_batches: enumerate when there are at most this many batches, else Monte Carlo.
        generator: CPU generator for the Monte Carlo case.

    Returns:
        :class:`BatchGradMoments`.

    Raises:
        ValueError: for a bad ``grads`` shape, ``b`` or ``max_batches``.

    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    >>> batch_grad_moments(g, 1).norm, batch_grad_moments(g, 2).norm
    (tensor(1.), tensor(0.))
    """
    _check_grads(grads)
    law = batch_distribution(
        grads.shape[0],
        b,
        replacement=replacement,
        max_batches=max_batches,
        generator=generator,
        dtype=grads.dtype,
        device=grads.device,
    )
    gram = grads @ grads.T
    sq = ((law.weights @ gram) * law.weights).sum(1).clamp_min(0)
    return BatchGradMoments(law.probs @ sq, law.probs @ sq.sqrt(), law.exact)


def expected_sq_batch_grad_norm(grads: Tensor, b: int, *, replacement: bool = False) -> Tensor:
    r"""The closed form :math:`\mathbb E\|g_\gamma\|^2=\|\nabla f\|^2+c_B\operatorname{tr}V` (C1).

    Book: chapter 2, "Claim C1: the second moment of a stochastic gradient"; paper: claims C1-C2, Prop. 3.9.

    Args:
        grads: per-sample gradients ``[n, P]``.
        b: batch size.
        replacement: the sampling scheme, which sets :math:`c_B`
            (see :func:`batch_noise_coefficient`).

    >>> expected_sq_batch_grad_norm(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), 1)
    tensor(1.)
    """
    _check_grads(grads)
    c = batch_noise_coefficient(grads.shape[0], b, replacement=replacement)
    return grads.mean(0).square().sum() + c * sgn_trace(grads)
