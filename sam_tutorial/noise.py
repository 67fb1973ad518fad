r"""The structure of stochastic gradient noise (SGN): per-sample gradients, :math:`V`, its trace and
spectrum, mini-batch gradient moments, and Fisher traces.

For a model with per-sample losses :math:`f_i(x)`, :math:`i=1..n`, and :math:`f=\frac1n\sum_i f_i`,
the SGN covariance is

.. math::

    V(x) = \frac1n\sum_{i=1}^n (\nabla f_i(x)-\nabla f(x))(\nabla f_i(x)-\nabla f(x))^\top .

A mini-batch gradient :math:`g_\gamma=\frac1{|\gamma|}\sum_{i\in\gamma}\nabla f_i` has
:math:`\operatorname{Cov}(g_\gamma)=c_B V`, hence (paper §3.1, claim C1)

.. math::

    \mathbb E\|g_\gamma\|^2 = \|\nabla f\|^2 + c_B\operatorname{tr}V,\qquad
    c_B=\tfrac1B\ \text{(with replacement)},\quad c_B=\tfrac{n-B}{B(n-1)}\ \text{(without)}.

Per-sample gradients come from :mod:`torch.func` (``vmap(grad(...))``) in chunks, flattened in
``model.parameters()`` order over the parameters that require grad. ``loss_fn(outputs, targets)``
returns per-sample losses of shape ``[B]``. Everything stays on the model's device; no function here
calls ``.item()``.

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = torch.nn.Linear(3, 2)
>>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
>>> loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
>>> per_sample_grads(model, loss_fn, x, y).shape
torch.Size([8, 8])
>>> bool(trace_V(model, loss_fn, x, y) > 0)
True

References:
    Luo, Harandi, Phung & Le, *Unveiling m-Sharpness Through the Structure of Stochastic Gradient
    Noise*, NeurIPS 2025, §3.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import grad, jacrev, vmap

from sam_tutorial.functional import (
    Inputs,
    LossFn,
    as_tuple,
    check_batch,
    flat_params,
    functional_losses,
    functional_outputs,
)
from sam_tutorial.functional import eval_mode as _eval  # functions here take a keyword `eval_mode`
from sam_tutorial.gradnorms import ModuleReusedError, per_sample_sq_norms, supports_fast_norms

__all__ = [
    "BatchDistribution",
    "BatchGradMoments",
    "batch_distribution",
    "batch_grad_moments",
    "batch_noise_coefficient",
    "empirical_fisher_trace",
    "expected_sq_batch_grad_norm",
    "fisher_trace",
    "per_sample_grads",
    "sgn_spectrum",
    "sgn_trace",
    "trace_V",
]

# Per-sample gradient chunks hold at most this many numbers (16 MiB in float64): trace_V over a large
# set never materialises the whole B x P matrix, and small chunks measured 3x faster than 2**24.
_CHUNK_NUMBERS = 2**21


def _chunk_size(chunk_size: int | None, batch: int, numel: int) -> int:
    if chunk_size is None:
        return max(1, min(batch, _CHUNK_NUMBERS // max(numel, 1)))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return chunk_size


def _grad_chunks(
    model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, chunk_size: int | None
) -> Iterator[Tensor]:
    """Yield per-sample gradients ``[c, P]`` chunk by chunk (call inside an eval-mode block)."""
    inputs = as_tuple(inputs)
    batch = check_batch(inputs, targets)
    fn = functional_losses(model, loss_fn)
    w = flat_params(model)
    step = _chunk_size(chunk_size, batch, w.numel())

    def one(w: Tensor, xs: tuple[Tensor, ...], y: Tensor) -> Tensor:
        return fn(w, tuple(t.unsqueeze(0) for t in xs), y.unsqueeze(0)).sum()

    # Dropout in training mode needs its own mask per sample.
    per_sample = vmap(grad(one), in_dims=(None, 0, 0), randomness="different")
    for start in range(0, batch, step):
        stop = min(start + step, batch)
        yield per_sample(w, tuple(t[start:stop] for t in inputs), targets[start:stop])


def per_sample_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    r"""Per-sample gradients :math:`\nabla f_i(x)` stacked as rows, shape ``[B, P]``.

    Args:
        model: the network; its parameters and buffers are not modified.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        targets: targets with the batch on dim 0.
        chunk_size: samples per ``vmap`` call (``None``: as many as fit in about
            :math:`2^{21}` numbers).
        eval_mode: evaluate with the model in eval mode (BatchNorm running statistics, no dropout).
            Per-sample gradients through BatchNorm batch statistics are not defined, so keep the
            default for BatchNorm models.

    Returns:
        Tensor ``[B, P]``, columns in ``model.parameters()`` order (trainable parameters only).

    Raises:
        ValueError: if ``inputs`` and ``targets`` disagree on the batch size, ``loss_fn`` does not
            return shape ``[B]``, or ``chunk_size < 1``.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> with torch.no_grad():
    ...     _ = net.weight.zero_()
    >>> per_sample_grads(net, lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2, x, torch.ones(2))
    tensor([[-1., -2.],
            [-3., -4.]])
    """
    with _eval(model, eval_mode):
        return torch.cat(list(_grad_chunks(model, loss_fn, inputs, targets, chunk_size)))


def trace_V(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
    eval_mode: bool = True,
    method: str = "auto",
) -> Tensor:
    r"""The trace of the SGN covariance over the given samples,
    :math:`\operatorname{tr}V=\frac1n\sum_i\|\nabla f_i-\nabla f\|^2`.

    Two routes give the same number:

    * ``"hooks"`` (:mod:`sam_tutorial.gradnorms`): per-sample squared norms from one forward and
      one backward pass, then :math:`\frac1n\sum_i\|\nabla f_i\|^2-\|\nabla f\|^2`. Costs about
      1-2 forward+backward passes; in float32 it loses accuracy only when
      :math:`\operatorname{tr}V\ll\|\nabla f\|^2`.
    * ``"vmap"``: per-sample gradients from :func:`torch.func.vmap` chunk by chunk, merged with Chan
      et al.'s pairwise update of the sum of squared deviations (no cancellation, never all
      ``B x P`` numbers at once). Works for any model :mod:`torch.func` can differentiate.

    ``"auto"`` takes ``"hooks"`` when :func:`sam_tutorial.gradnorms.supports_fast_norms` holds and
    no module runs twice in the forward pass, ``"vmap"`` otherwise.

    Args:
        model: the network.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0 (the :math:`n` samples).
        targets: targets with the batch on dim 0.
        chunk_size: samples per chunk (``None``: the whole set at once for ``"hooks"``, about
            :math:`2^{21}` numbers a chunk for ``"vmap"``).
        eval_mode: evaluate in eval mode (see :func:`per_sample_grads`).
        method: ``"auto"``, ``"hooks"`` or ``"vmap"``.

    Returns:
        0-d tensor (the normalisation is :math:`1/n`, as in the paper's definition of :math:`V`),
        accumulated in at least float32.

    Raises:
        ValueError: as :func:`per_sample_grads`; for an unknown ``method``; for ``"hooks"`` on an
            unsupported model.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = net.weight.zero_()
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> trace_V(net, lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2, x, torch.ones(2))
    tensor(2.)
    """
    with _eval(model, eval_mode):
        if _use_hooks(model, method):
            try:
                sq_mean, mean_grad = _hook_moments(model, loss_fn, inputs, targets, chunk_size)
                return sq_mean - mean_grad.square().sum()
            except ModuleReusedError:
                if method == "hooks":
                    raise
        count = 0
        mean: Tensor | None = None
        m2: Tensor | None = None
        for g in _grad_chunks(model, loss_fn, inputs, targets, chunk_size):
            g = g.to(torch.promote_types(g.dtype, torch.float32))
            k = g.shape[0]
            mu = g.mean(0)
            m2_chunk = (g - mu).square().sum()
            if mean is None or m2 is None:
                mean, m2 = mu, m2_chunk
            else:
                delta = mu - mean
                total = count + k
                m2 = m2 + m2_chunk + delta.square().sum() * (count * k / total)
                mean = mean + delta * (k / total)
            count += k
    assert m2 is not None
    return m2 / count


_METHODS = ("auto", "hooks", "vmap")


def _use_hooks(model: nn.Module, method: str) -> bool:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}; got {method!r}")
    if method == "vmap":
        return False
    ok = supports_fast_norms(model)
    if method == "hooks" and not ok:
        raise ValueError(
            "method='hooks' needs every trainable parameter in a Linear, Conv1d/Conv2d (groups=1), "
            "eval-mode BatchNorm, GroupNorm or LayerNorm; use method='vmap'"
        )
    return ok


def _hook_moments(
    model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, chunk_size: int | None
) -> tuple[Tensor, Tensor]:
    """Mean squared per-sample gradient norm and mean gradient, chunk by chunk, via hooks."""
    inputs = as_tuple(inputs)
    batch = check_batch(inputs, targets)
    step = batch if chunk_size is None else _chunk_size(chunk_size, batch, 1)
    sq_sum: Tensor | None = None
    grad_sum: Tensor | None = None
    for start in range(0, batch, step):
        stop = min(start + step, batch)
        sq, mean_grad = per_sample_sq_norms(
            model, loss_fn, tuple(t[start:stop] for t in inputs), targets[start:stop]
        )
        k = stop - start
        sq_sum = sq.sum() if sq_sum is None else sq_sum + sq.sum()
        grad_sum = mean_grad * k if grad_sum is None else grad_sum + mean_grad * k
    assert sq_sum is not None and grad_sum is not None
    return sq_sum / batch, grad_sum / batch


def sgn_trace(grads: Tensor) -> Tensor:
    r""":math:`\operatorname{tr}V` from per-sample gradients stacked as rows (``[n, P]``).

    >>> sgn_trace(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    tensor(1.)
    """
    _check_grads(grads)
    return (grads - grads.mean(0)).square().sum(1).mean()


def _check_grads(grads: Tensor) -> None:
    if grads.dim() != 2 or grads.shape[0] < 1:
        raise ValueError(f"grads must have shape [n, P] with n >= 1, got {tuple(grads.shape)}")


def sgn_spectrum(grads: Tensor, k: int | None = None) -> Tensor:
    r"""The largest eigenvalues of :math:`V=\frac1n G_c^\top G_c` (:math:`G_c` the centred rows).

    When :math:`n<P` the nonzero spectrum is taken from the :math:`n\times n` Gram matrix
    :math:`\frac1n G_cG_c^\top`, which has the same nonzero eigenvalues; otherwise from the
    :math:`P\times P` covariance.

    Args:
        grads: per-sample gradients ``[n, P]`` (e.g. from :func:`per_sample_grads`).
        k: how many eigenvalues; ``None`` returns all :math:`\min(n, P)`.

    Returns:
        Tensor ``[k]``, descending.

    Raises:
        ValueError: if ``grads`` is not ``[n, P]`` or ``k`` is not in ``[1, min(n, P)]``.

    >>> sgn_spectrum(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    tensor([1., 0.])
    """
    _check_grads(grads)
    n, p = grads.shape
    size = min(n, p)
    if k is None:
        k = size
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise ValueError(f"k must be an integer in [1, min(n, P)] = [1, {size}], got {k!r}")
    centred = grads - grads.mean(0)
    gram = centred @ centred.T if n <= p else centred.T @ centred
    evals = torch.linalg.eigvalsh(gram / n)
    return evals.flip(0)[:k]


def batch_noise_coefficient(n: int, b: int, *, replacement: bool = False) -> float:
    r"""The factor :math:`c_B` in :math:`\operatorname{Cov}(g_\gamma)=c_B V` for batches of size ``b``.

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
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    hi = "" if replacement else f", and b <= n = {n} without replacement"
    if isinstance(b, bool) or not isinstance(b, int) or b < 1 or (not replacement and b > n):
        raise ValueError(f"b must be an integer >= 1{hi}; got {b!r}")


class BatchDistribution(NamedTuple):
    """Batches as rows of weights: the batch mean of per-sample values ``a`` is ``weights @ a``."""

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
    if isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1:
        raise ValueError(f"max_batches must be a positive integer, got {max_batches!r}")
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
        if replacement:
            index = torch.randint(n, (max_batches, b), generator=gen)
        else:
            index = torch.rand(max_batches, n, generator=gen).argsort(1)[:, :b]
        counts = torch.zeros(max_batches, n, dtype=torch.float64).scatter_add_(
            1, index, torch.ones(max_batches, b, dtype=torch.float64)
        )
        probs = torch.full((max_batches,), 1.0 / max_batches, dtype=torch.float64)
        exact = False
    return BatchDistribution(
        (counts / b).to(dtype=dtype, device=device), probs.to(dtype=dtype, device=device), exact
    )


class BatchGradMoments(NamedTuple):
    r"""Moments of the mini-batch gradient norm over the batch law."""

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
    dist = batch_distribution(
        grads.shape[0],
        b,
        replacement=replacement,
        max_batches=max_batches,
        generator=generator,
        dtype=grads.dtype,
        device=grads.device,
    )
    gram = grads @ grads.T
    sq = ((dist.weights @ gram) * dist.weights).sum(1).clamp_min(0)
    return BatchGradMoments(dist.probs @ sq, dist.probs @ sq.sqrt(), dist.exact)


def expected_sq_batch_grad_norm(grads: Tensor, b: int, *, replacement: bool = False) -> Tensor:
    r"""The closed form :math:`\mathbb E\|g_\gamma\|^2=\|\nabla f\|^2+c_B\operatorname{tr}V` (C1).

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


def empirical_fisher_trace(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
    eval_mode: bool = True,
    method: str = "auto",
) -> Tensor:
    r"""The trace of the empirical Fisher :math:`\frac1n\sum_i\nabla f_i\nabla f_i^\top`, i.e.
    :math:`\frac1n\sum_i\|\nabla f_i\|^2=\operatorname{tr}V+\|\nabla f\|^2`.

    With ``loss_fn`` the negative log-likelihood of the observed labels this is the empirical
    Fisher of the paper's §3.5 (:math:`V\approx` Fisher near a minimum, where :math:`\nabla f\approx0`).

    Args:
        model: the network.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        targets: targets with the batch on dim 0.
        chunk_size: samples per chunk (see :func:`trace_V`).
        eval_mode: evaluate in eval mode (see :func:`per_sample_grads`).
        method: ``"auto"``, ``"hooks"`` or ``"vmap"`` (see :func:`trace_V`).

    Returns:
        0-d tensor.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = net.weight.zero_()
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> empirical_fisher_trace(net, lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2, x, torch.ones(2))
    tensor(15.)
    """
    with _eval(model, eval_mode):
        if _use_hooks(model, method):
            try:
                return _hook_moments(model, loss_fn, inputs, targets, chunk_size)[0]
            except ModuleReusedError:
                if method == "hooks":
                    raise
        total: Tensor | None = None
        count = 0
        for g in _grad_chunks(model, loss_fn, inputs, targets, chunk_size):
            g = g.to(torch.promote_types(g.dtype, torch.float32))
            s = g.square().sum()
            total = s if total is None else total + s
            count += g.shape[0]
    assert total is not None
    return total / count


def fisher_trace(
    model: nn.Module,
    inputs: Inputs,
    *,
    n_label_samples: int | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    r"""The trace of the true Fisher of a softmax classifier,
    :math:`\operatorname{tr}F=\frac1n\sum_i\sum_c p_c(x_i)\,\|\nabla\log p_c(x_i)\|^2`.

    The model must return logits ``[B, C]``. Labels are drawn from the model's own predictive
    distribution, not taken from the data (that is :func:`empirical_fisher_trace`). For a linear
    softmax model :math:`F` equals the Hessian of the mean cross-entropy.

    Args:
        model: a classifier returning logits ``[B, C]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        n_label_samples: ``None`` sums over all ``C`` classes exactly (cost ``C`` per-sample
            gradients per sample); an integer ``k`` averages over ``k`` labels sampled from
            :math:`p(\cdot\mid x_i)` instead (cost ``k``).
        generator: generator for the sampled labels, on the model's device.
        chunk_size: samples per chunk (``None``: automatic).
        eval_mode: evaluate in eval mode.

    Returns:
        0-d tensor.

    Raises:
        ValueError: if the outputs are not ``[B, C]`` logits or ``n_label_samples < 1``.

    >>> net = torch.nn.Linear(3, 4)
    >>> bool(fisher_trace(net, torch.randn(5, 3)) > 0)
    True
    """
    if n_label_samples is not None and (
        isinstance(n_label_samples, bool) or not isinstance(n_label_samples, int) or n_label_samples < 1
    ):
        raise ValueError(f"n_label_samples must be a positive integer or None, got {n_label_samples!r}")
    inputs = as_tuple(inputs)
    batch = inputs[0].shape[0]
    with _eval(model, eval_mode):
        outputs = functional_outputs(model)
        w = flat_params(model)
        with torch.no_grad():
            logits = outputs(w, inputs)
        if logits.dim() != 2 or logits.shape[0] != batch:
            raise ValueError(f"model must return logits of shape [B, C]; got {tuple(logits.shape)}")
        classes = logits.shape[1]
        probs = logits.softmax(-1).to(torch.promote_types(logits.dtype, torch.float32))
        if n_label_samples is None:
            labels = torch.arange(classes, device=logits.device).expand(batch, classes)
            weights = probs
        else:
            labels = torch.multinomial(probs, n_label_samples, replacement=True, generator=generator)
            weights = torch.full_like(labels, 1.0 / n_label_samples, dtype=probs.dtype)
        per_label = labels.shape[1]
        step = _chunk_size(chunk_size, batch, w.numel() * per_label)

        def log_lik(w: Tensor, xs: tuple[Tensor, ...], ys: Tensor) -> Tensor:
            log_p = outputs(w, tuple(t.unsqueeze(0) for t in xs)).log_softmax(-1)[0]
            return log_p[ys]

        per_sample = vmap(jacrev(log_lik), in_dims=(None, 0, 0), randomness="different")
        total = torch.zeros((), dtype=probs.dtype, device=logits.device)
        for start in range(0, batch, step):
            stop = min(start + step, batch)
            jac = per_sample(w, tuple(t[start:stop] for t in inputs), labels[start:stop])
            total = total + (weights[start:stop] * jac.to(probs.dtype).square().sum(-1)).sum()
    return total / batch
