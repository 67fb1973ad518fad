r"""Sharpness measures: m-sharpness (Foret et al. 2021; Andriushchenko & Flammarion 2022), average-case
(Gaussian) sharpness, and the per-step sharpness a SAM step already measures.

m-sharpness of a set of :math:`n` samples split into :math:`n/m` disjoint micro-batches
:math:`I_1,\dots,I_{n/m}` of size :math:`m` is

.. math::

    S_m(w) = \frac{m}{n}\sum_{j=1}^{n/m}\Big(\max_{\|\delta\|_2\le\rho} f_{I_j}(w+\delta)-f_{I_j}(w)\Big),

the mean over micro-batches of the worst loss increase inside the :math:`\rho`-ball, each micro-batch
with its *own* :math:`\delta`. As in A&F's ``eval_sharpness``, the inner maximum is approximated by
``n_iters`` steps of normalised gradient ascent :math:`\delta\leftarrow\Pi_\rho(\delta+\alpha
\nabla/\|\nabla\|)` with step :math:`\alpha=0.1\rho` by default, from :math:`\delta=0` (or a random
point on the sphere), keeping the best of ``restarts`` runs. Two differences from their code: the
best restart is chosen by *loss* (theirs by error), and restarts after the first always start from a
random point (theirs repeat the same run without ``rand_init``). Micro-batches are processed in
parallel with ``vmap``; the model is never modified.

>>> import torch
>>> net = torch.nn.Linear(2, 1, bias=False)
>>> loss = lambda out, y: out.squeeze(-1) - y          # linear in w: S_m = rho * mean_j ||g_Ij||
>>> x = torch.tensor([[3.0, 4.0], [3.0, -4.0]])
>>> m_sharpness(net, loss, x, torch.zeros(2), rho=0.1, m=1).round(decimals=5)
tensor(0.5000)
>>> m_sharpness(net, loss, x, torch.zeros(2), rho=0.1, m=2).round(decimals=5)
tensor(0.3000)

References:
    P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, *Sharpness-Aware Minimization for Efficiently
    Improving Generalization*, ICLR 2021, §4.1. M. Andriushchenko, N. Flammarion, *Towards
    Understanding Sharpness-Aware Minimization*, ICML 2022 (code: ``tml-epfl/understanding-sam``,
    ``utils_eval.eval_sharpness``).
"""


from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from sam_tutorial.config import Inputs, LossFn, as_tuple, check_batch, check_int, check_nonneg
from sam_tutorial.sgn.functional import batchable, check_per_sample, flat_params, functional_losses
from sam_tutorial.sgn.functional import eval_mode as _eval  # functions here take a keyword `eval_mode`

__all__ = ["average_sharpness", "m_sharpness", "sam_sharpness"]


def _map(fn: Callable[..., Tensor], batched: bool, chunk_size: int | None) -> Callable[..., Tensor]:
    """``vmap(fn)`` over dim 0 of every argument, or a Python loop when vmap cannot be used."""
    if batched:
        return vmap(fn, chunk_size=chunk_size, randomness="different")

    def pick(arg: Tensor | tuple[Tensor, ...], i: int) -> Tensor | tuple[Tensor, ...]:
        return arg[i] if isinstance(arg, Tensor) else tuple(t[i] for t in arg)

    def loop(*args: Tensor | tuple[Tensor, ...]) -> Tensor:
        first = args[0] if isinstance(args[0], Tensor) else args[0][0]
        return torch.stack([fn(*(pick(a, i) for a in args)) for i in range(first.shape[0])])

    return loop


def _micro_batches(
    model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, m: int | None
) -> tuple[Callable[[Tensor, tuple[Tensor, ...], Tensor], Tensor], Tensor, tuple[Tensor, ...], Tensor]:
    """Mean-loss function of (w, micro-batch), flat params, and the data reshaped to ``[n/m, m, ...]``."""
    inputs = as_tuple(inputs)
    n = check_batch(inputs, targets)
    m = n if m is None else check_int("m", m, 1)
    if n % m:
        raise ValueError(f"m must divide the number of samples n={n}; got m={m}")
    if m == 1:
        check_per_sample(model, "sharpness with micro-batches of m=1 sample")
    k = n // m
    losses = functional_losses(model, loss_fn)

    def mean_loss(w: Tensor, xs: tuple[Tensor, ...], y: Tensor) -> Tensor:
        return losses(w, xs, y).mean()

    xs = tuple(t.reshape(k, m, *t.shape[1:]) for t in inputs)
    return mean_loss, flat_params(model), xs, targets.reshape(k, m, *targets.shape[1:])


def _project(delta: Tensor, rho: float) -> Tensor:
    norm = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(rho / norm.clamp_min(torch.finfo(delta.dtype).tiny), max=1.0)


def m_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    rho: float,
    m: int,
    n_iters: int = 20,
    step_size: float | None = None,
    restarts: int = 1,
    random_init: bool = False,
    normalize: bool = True,
    seed: int = 0,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    r"""m-sharpness :math:`S_m` (module docstring) over the given samples, micro-batches in order.

    Book: chapter 4, "A real network: MNIST-1D"; paper: the sharpness of Eq. (2) over micro-batches of m.

    Args:
        model: the network (not modified).
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the :math:`n` samples on dim 0.
        targets: targets with the samples on dim 0.
        rho: radius of the :math:`L_2` ball, :math:`\rho\ge0`.
        m: micro-batch size; must divide :math:`n` (``m = n`` is the sharpness of the whole set).
        n_iters: ascent steps per restart.
        step_size: ascent step :math:`\alpha` (default ``0.1 * rho``, as A&F).
        restarts: independent ascents per micro-batch; the largest loss increase is kept.
        random_init: start the first restart at a random point of the sphere of radius ``rho``
            (later restarts always do).
        normalize: normalised ascent steps (A&F's default; ``False`` is their ``no_grad_norm``).
        seed: seed of the random starts (generator on the model's device).
        chunk_size: micro-batches per ``vmap`` call (``None``: all).
        eval_mode: BatchNorm in eval mode, no dropout (as A&F evaluate).

    Returns:
        0-d tensor on the model's device.

    Raises:
        ValueError: if ``m`` does not divide :math:`n`, ``rho < 0``, ``n_iters < 1``,
            ``restarts < 1`` or ``step_size <= 0``.

    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> sq = lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2   # at its minimum: S = rho^2 / 2 * x^2
    >>> with torch.no_grad():
    ...     _ = net.weight.zero_()
    >>> m_sharpness(net, sq, torch.ones(1, 1), torch.zeros(1), rho=0.5, m=1,
    ...             random_init=True).round(decimals=6)
    tensor(0.1250)
    """
    rho = check_nonneg("rho", rho)
    n_iters = check_int("n_iters", n_iters, 1)
    restarts = check_int("restarts", restarts, 1)
    alpha = 0.1 * rho if step_size is None else check_nonneg("step_size", step_size, positive=True)
    with _eval(model, eval_mode):
        mean_loss, w, xs, ys = _micro_batches(model, loss_fn, inputs, targets, m)
        if rho == 0:
            return torch.zeros((), dtype=w.dtype, device=w.device)
        batched = batchable(model)

        def ascent(delta: Tensor, x: tuple[Tensor, ...], y: Tensor) -> Tensor:
            g = grad(lambda d: mean_loss(w + d, x, y))(delta)
            if normalize:
                g = g / (g.norm() + 1e-12)
            return _project(delta + alpha * g, rho)

        step = _map(ascent, batched, chunk_size)
        value = _map(lambda d, x, y: mean_loss(w + d, x, y), batched, chunk_size)
        k = ys.shape[0]
        base = value(torch.zeros(k, w.numel(), dtype=w.dtype, device=w.device), xs, ys)
        generator = torch.Generator(device=w.device).manual_seed(seed)
        best: Tensor | None = None
        for restart in range(restarts):
            delta = torch.zeros(k, w.numel(), dtype=w.dtype, device=w.device)
            if random_init or restart > 0:
                delta = torch.randn(delta.shape, generator=generator, dtype=w.dtype, device=w.device)
                delta = rho * delta / delta.norm(dim=-1, keepdim=True)
            for _ in range(n_iters):
                delta = step(delta, xs, ys)
            obj = value(delta, xs, ys)
            best = obj if best is None else torch.maximum(best, obj)
    assert best is not None
    return (best - base).mean()


def sam_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    rho: float,
    m: int | None = None,
    normalize: bool = True,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    r"""The sharpness a (m-)SAM step measures for free:
    :math:`\frac mn\sum_j f_{I_j}(w+e_j)-f_{I_j}(w)` with :math:`e_j=\rho\,g_j/\|g_j\|`,
    :math:`g_j=\nabla f_{I_j}(w)` (USAM: :math:`e_j=\rho\,g_j`).

    Book: chapter 4, "A real network: MNIST-1D"; paper: the sharpness of Eq. (2) over micro-batches of m.

    To first order this is :math:`\rho\,\frac mn\sum_j\|g_j\|`, the quantity SAM's implicit
    regulariser :math:`\rho\,\mathbb E\|\nabla f_I\|` averages (paper §4.2). It equals
    :func:`m_sharpness` with one normalised ascent step of size ``rho``.

    Args:
        model: the network (not modified).
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the samples on dim 0.
        targets: targets with the samples on dim 0.
        rho: perturbation radius, :math:`\rho\ge0`.
        m: micro-batch size (``None``: the whole batch, i.e. SAM; must divide the batch).
        normalize: SAM (``True``) or USAM (``False``) perturbation.
        chunk_size: micro-batches per ``vmap`` call.
        eval_mode: BatchNorm in eval mode, no dropout.

    Returns:
        0-d tensor.

    Raises:
        ValueError: if ``m`` does not divide the batch or ``rho < 0``.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> loss = lambda out, y: out.squeeze(-1) - y
    >>> sam_sharpness(net, loss, torch.tensor([[3.0, 4.0]]), torch.zeros(1), rho=0.1).round(decimals=5)
    tensor(0.5000)
    """
    rho = check_nonneg("rho", rho)
    with _eval(model, eval_mode):
        mean_loss, w, xs, ys = _micro_batches(model, loss_fn, inputs, targets, m)

        def increase(x: tuple[Tensor, ...], y: Tensor) -> Tensor:
            g = grad(lambda v: mean_loss(v, x, y))(w)
            e = rho * g / (g.norm() + 1e-12) if normalize else rho * g
            return mean_loss(w + e, x, y) - mean_loss(w, x, y)

        return _map(increase, batchable(model), chunk_size)(xs, ys).mean()


def average_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    sigma: float,
    n_samples: int = 64,
    antithetic: bool = True,
    seed: int = 0,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    r"""Average-case sharpness :math:`\mathbb E_{\delta\sim N(0,\sigma^2 I)}f(w+\delta)-f(w)`.

    Book: chapter 4, "A real network: MNIST-1D"; paper: the sharpness of Eq. (2) over micro-batches of m.

    For a quadratic loss it equals :math:`\frac{\sigma^2}2\operatorname{tr}\nabla^2 f` exactly, so it
    is a Gaussian-probe trace estimate. With ``antithetic=True`` every draw is used as
    :math:`\pm\delta` and :math:`\frac12(f(w+\delta)+f(w-\delta))-f(w)` is averaged, which cancels
    the odd Taylor terms (the gradient term among them) exactly.

    Args:
        model: the network (not modified).
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        targets: targets with the batch on dim 0.
        sigma: standard deviation of the perturbation per parameter, :math:`\sigma\ge0`.
        n_samples: number of draws of :math:`\delta`.
        antithetic: pair each draw with its negative.
        seed: seed of the generator on the model's device.
        chunk_size: draws per ``vmap`` call.
        eval_mode: BatchNorm in eval mode, no dropout.

    Returns:
        0-d tensor.

    Raises:
        ValueError: if ``sigma < 0`` or ``n_samples < 1``.

    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> sq = lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2
    >>> s = average_sharpness(net, sq, torch.ones(1, 1), torch.zeros(1), sigma=0.1, n_samples=4000)
    >>> abs(float(s) - 0.5 * 0.1**2) < 5e-4
    True
    """
    sigma = check_nonneg("sigma", sigma)
    n_samples = check_int("n_samples", n_samples, 1)
    with _eval(model, eval_mode):
        mean_loss, w, xs, ys = _micro_batches(model, loss_fn, inputs, targets, None)
        x, y = tuple(t[0] for t in xs), ys[0]
        generator = torch.Generator(device=w.device).manual_seed(seed)
        delta = sigma * torch.randn(n_samples, w.numel(), generator=generator, dtype=w.dtype, device=w.device)
        at = _map(lambda d: mean_loss(w + d, x, y), batchable(model), chunk_size)
        base = mean_loss(w, x, y)
        values = 0.5 * (at(delta) + at(-delta)) if antithetic else at(delta)
        return values.mean() - base
