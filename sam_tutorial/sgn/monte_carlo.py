r"""Mini-batch gradients as an optimizer sees them: batches drawn with or without replacement, and the
gradient of each batch's mean loss computed by autograd, for Monte Carlo checks of the SGN structure.

:mod:`sam_tutorial.sgn.variance` gives the closed forms (:math:`c_B`, :math:`\mathbb E\|g_\gamma\|^2`) and
moments computed from the Gram matrix of per-sample gradients. This module is the independent route:
it draws batches the way a data loader does and differentiates each batch's mean loss
:math:`f_\gamma=\frac1B\sum_{i\in\gamma}f_i` directly (``vmap`` over batches of ``grad``), so a Monte
Carlo estimate made here shares no code with the closed form it is checked against.

.. code-block:: text

    batches  = sample_batches(n, B, N, replacement)        # [N, B] indices, rows i.i.d.
    G_batch  = batch_grads(model, loss, X, Y, batches)      # [N, P], row s = grad f_{batch s}(x)
    xi       = G_batch - grad f(x)                          # SGN samples
    mc = monte_carlo_moments(G_batch, full_grad)            # E||g||^2, E||g||, tr Cov, with std errors
    covariance_mismatch(xi, per_sample_grads, c_B)          # ||Cov_hat - c_B V||_F / ||c_B V||_F

>>> import torch
>>> b = sample_batches(5, 3, 4, generator=torch.Generator().manual_seed(0))
>>> b.shape, all(len(set(row.tolist())) == 3 for row in b)
(torch.Size([4, 3]), True)

References:
    Luo, Harandi, Phung & Le, *Unveiling m-Sharpness Through the Structure of Stochastic Gradient
    Noise*, NeurIPS 2025, §3 (claims C1, C2 of the book's paper reference).
"""


from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from sam_tutorial.config import Inputs, LossFn, as_tuple, check_batch, check_int, check_tensor
from sam_tutorial.sgn.functional import batchable, flat_params, functional_losses
from sam_tutorial.sgn.functional import eval_mode as _eval

__all__ = ["MonteCarloMoments", "batch_grads", "covariance_mismatch", "monte_carlo_moments", "sample_batches"]


# A chunk of batches holds at most this many samples, so [chunk, B, ...] inputs and the vmapped
# activations stay small whatever B is.
_CHUNK_SAMPLES = 2**14


def sample_batches(
    n: int,
    b: int,
    num_batches: int,
    *,
    replacement: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""``num_batches`` independent batches of ``b`` indices out of ``range(n)``, shape ``[N, b]``.

    Book: chapter 2, "Mini-batch noise, with and without replacement"; paper: claim C1.

    Without replacement each row is a uniformly random ``b``-subset (the first ``b`` entries of a
    uniformly random permutation, as a shuffling loader produces); with replacement the ``b`` indices
    are i.i.d. uniform.

    Args:
        n: number of samples.
        b: batch size; ``b <= n`` without replacement.
        num_batches: number of rows.
        replacement: draw the indices of a row with replacement.
        generator: a CPU generator (default: a fresh one seeded with 0, so results repeat).

    Returns:
        ``int64`` tensor ``[num_batches, b]`` on the CPU.

    Raises:
        ValueError: for non-positive arguments, or ``b > n`` without replacement.

    >>> sample_batches(4, 4, 1, generator=torch.Generator().manual_seed(1)).sort().values
    tensor([[0, 1, 2, 3]])
    """
    n, b, num_batches = (check_int(k, v) for k, v in (("n", n), ("b", b), ("num_batches", num_batches)))
    if not replacement and b > n:
        raise ValueError(f"b must be <= n = {n} without replacement, got {b}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if replacement:
        return torch.randint(0, n, (num_batches, b), generator=gen)
    keys = torch.rand(num_batches, n, generator=gen)
    return keys.argsort(dim=1)[:, :b]


def batch_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    batches: Tensor,
    *,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    r"""The gradient :math:`\nabla f_\gamma(x)` of the mean loss of every batch, one row per batch.

    Book: chapter 2, "Mini-batch noise, with and without replacement"; paper: claim C1.

    Row ``s`` is the autograd gradient of ``loss_fn(model(inputs[batches[s]]), targets[batches[s]])
    .mean()``; a repeated index counts as many times as it appears (sampling with replacement).
    Batches are processed ``chunk_size`` at a time with ``vmap``.

    Args:
        model: the network; its parameters and buffers are not modified.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors, the ``n`` samples on dim 0.
        targets: targets, the ``n`` samples on dim 0.
        batches: ``[N, B]`` integer indices into the ``n`` samples (e.g. :func:`sample_batches`).
        chunk_size: batches per ``vmap`` call (``None``: as many as hold about :math:`2^{14}`
            samples).
        eval_mode: evaluate in eval mode (BatchNorm running statistics, no dropout), as the
            per-sample quantities of :mod:`sam_tutorial.sgn.variance` do.

    Returns:
        Tensor ``[N, P]``, columns in ``model.parameters()`` order (trainable parameters only).

    Raises:
        ValueError: if ``batches`` is not a 2-d integer tensor with indices in ``[0, n)``, or as
            :func:`sam_tutorial.sgn.per_sample.per_sample_grads`.

    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(0.0)
    >>> mse = lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2
    >>> x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 1.0])
    >>> batch_grads(net, mse, x, y, torch.tensor([[0, 1], [1, 1]]))
    tensor([[-1.5000],
            [-2.0000]])
    """
    inputs = as_tuple(inputs)
    n = check_batch(inputs, targets)
    if batches.dim() != 2 or batches.dtype.is_floating_point or batches.dtype == torch.bool:
        raise ValueError(
            f"batches must be a 2-d integer tensor [N, B], got {batches.dtype} {tuple(batches.shape)}"
        )
    if batches.numel() == 0:
        raise ValueError("batches must hold at least one batch of at least one index")
    if int(batches.min()) < 0 or int(batches.max()) >= n:
        raise ValueError(f"batches must index samples in [0, n) = [0, {n})")
    num, b = batches.shape
    step = max(1, _CHUNK_SAMPLES // b) if chunk_size is None else check_int("chunk_size", chunk_size)
    with _eval(model, eval_mode):
        losses = functional_losses(model, loss_fn)
        w = flat_params(model)
        device = w.device

        def mean_loss(w: Tensor, xs: tuple[Tensor, ...], y: Tensor) -> Tensor:
            return losses(w, xs, y).mean()

        one = grad(mean_loss)
        vmapped = vmap(one, in_dims=(None, 0, 0), randomness="different")
        batched = batchable(model)  # BatchNorm on batch statistics writes its (cloned) buffers: a loop

        def per_batch(w: Tensor, xs: tuple[Tensor, ...], y: Tensor) -> Tensor:
            if batched:
                return vmapped(w, xs, y)
            return torch.stack([one(w, tuple(t[i] for t in xs), y[i]) for i in range(len(y))])
        rows = []
        for start in range(0, num, step):
            idx = batches[start : start + step].to(device)
            xs = tuple(t[idx] for t in inputs)  # [c, B, ...]
            rows.append(per_batch(w, xs, targets[idx]))
    return torch.cat(rows)


class MonteCarloMoments(NamedTuple):
    r"""Monte Carlo estimates from ``N`` sampled mini-batch gradients, each with its standard error.

    Book: chapter 2, "Mini-batch noise, with and without replacement"; paper: claim C1.
    """

    sq_norm: Tensor
    r""":math:`\widehat{\mathbb E}\|g_\gamma\|^2` (0-d)."""
    sq_norm_se: Tensor
    """Its standard error, ``std / sqrt(N)``."""
    norm: Tensor
    r""":math:`\widehat{\mathbb E}\|g_\gamma\|` (0-d)."""
    norm_se: Tensor
    """Its standard error."""
    trace_cov: Tensor
    r""":math:`\widehat{\mathbb E}\|g_\gamma-\nabla f\|^2`, the trace of the SGN covariance, using
    the exact mean :math:`\nabla f` (0-d)."""
    trace_cov_se: Tensor
    """Its standard error."""
    num_batches: int
    """``N``."""


def monte_carlo_moments(batch_grads: Tensor, full_grad: Tensor) -> MonteCarloMoments:
    r"""Sample means (and standard errors) of :math:`\|g\|^2`, :math:`\|g\|` and
    :math:`\|g-\nabla f\|^2` over sampled mini-batch gradients.

    Book: chapter 2, "Mini-batch noise, with and without replacement"; paper: claim C1.

    Args:
        batch_grads: ``[N, P]`` mini-batch gradients (e.g. :func:`batch_grads`), ``N >= 2``.
        full_grad: ``[P]``, the exact full gradient :math:`\nabla f` (e.g. the mean of the
            per-sample gradients).

    Returns:
        :class:`MonteCarloMoments` (float64 0-d tensors on the inputs' device).

    Raises:
        ValueError: for ``N < 2`` or mismatched shapes.

    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    >>> mc = monte_carlo_moments(g, torch.zeros(2))
    >>> float(mc.sq_norm), float(mc.sq_norm_se), float(mc.trace_cov)
    (1.0, 0.0, 1.0)
    """
    check_tensor("batch_grads", batch_grads, floating=True, finite=True)
    check_tensor("full_grad", full_grad, floating=True, finite=True)
    if batch_grads.dim() != 2 or batch_grads.shape[0] < 2:
        raise ValueError(f"batch_grads must have shape [N, P] with N >= 2, got {tuple(batch_grads.shape)}")
    if full_grad.shape != batch_grads.shape[1:]:
        raise ValueError(f"full_grad must have shape [{batch_grads.shape[1]}], got {tuple(full_grad.shape)}")
    g = batch_grads.double()
    num = g.shape[0]
    sq = g.square().sum(1)
    dev = (g - full_grad.double()).square().sum(1)

    def mean_se(v: Tensor) -> tuple[Tensor, Tensor]:
        return v.mean(), v.std(unbiased=True) / math.sqrt(num)

    return MonteCarloMoments(*mean_se(sq), *mean_se(sq.sqrt()), *mean_se(dev), num)


def covariance_mismatch(noise: Tensor, grads: Tensor, c: float) -> Tensor:
    r"""The relative Frobenius distance :math:`\|\hat C-c\,V\|_F/\|c\,V\|_F` between the empirical
    second moment :math:`\hat C=\frac1N\sum_s\xi_s\xi_s^\top` of SGN samples and :math:`c\,V`.

    Book: chapter 2, "Mini-batch noise, with and without replacement"; paper: claim C1.

    Never forms a :math:`P\times P` matrix: with :math:`\Xi` the ``[N, P]`` noise samples and
    :math:`G_c` the ``[n, P]`` centred per-sample gradients (:math:`V=\frac1nG_c^\top G_c`),
    :math:`\|\hat C\|_F^2=\|\Xi\Xi^\top\|_F^2/N^2`, :math:`\langle\hat C,V\rangle=\|\Xi G_c^\top\|_F^2/(Nn)`
    and :math:`\|V\|_F^2=\|G_cG_c^\top\|_F^2/n^2`. For i.i.d. samples with covariance exactly
    :math:`cV` the mismatch shrinks like :math:`1/\sqrt N`.

    Args:
        noise: ``[N, P]`` samples :math:`\xi_s=g_{\gamma_s}-\nabla f` (centred with the exact mean).
        grads: ``[n, P]`` per-sample gradients (centred here).
        c: the predicted factor, e.g. :func:`sam_tutorial.sgn.batches.batch_noise_coefficient`; ``c > 0``.

    Returns:
        A 0-d float64 tensor. The matrix products run in the inputs' dtype, at least float32; in
        float32 the result is accurate to about :math:`10^{-3}` of itself down to mismatches of
        about :math:`10^{-2}`; pass float64 inputs for smaller ones.

    Raises:
        ValueError: for mismatched shapes, ``c <= 0`` or ``V = 0``.

    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    >>> float(covariance_mismatch(g, g, 1.0)), float(covariance_mismatch(g, g, 0.5))
    (0.0, 1.0)
    """
    if noise.dim() != 2 or grads.dim() != 2 or noise.shape[1] != grads.shape[1]:
        raise ValueError(
            f"noise [N, P] and grads [n, P] must share P; got {tuple(noise.shape)} and {tuple(grads.shape)}"
        )
    if not c > 0:
        raise ValueError(f"c must be > 0, got {c!r}")
    # the products run in the inputs' precision (at least float32), the sums of squares in float64
    dtype = torch.promote_types(torch.promote_types(noise.dtype, grads.dtype), torch.float32)
    xi = noise.to(dtype)
    gc = grads.to(dtype) - grads.to(dtype).mean(0)
    num, n = xi.shape[0], gc.shape[0]
    c_sq = (xi @ xi.T).double().square().sum() / num**2
    cross = (xi @ gc.T).double().square().sum() / (num * n)
    v_sq = (gc @ gc.T).double().square().sum() / n**2
    if not bool(v_sq > 0):
        raise ValueError("V is zero: every per-sample gradient is the same")
    dist_sq = (c_sq - 2 * c * cross + c**2 * v_sq).clamp_min(0)
    return dist_sq.sqrt() / (c * v_sq.sqrt())
