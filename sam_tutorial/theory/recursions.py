r"""The discrete SAM-family algorithms on a toy problem, for many independent runs at once, and their
exact expected one-step update.

A problem is a callable ``problem(x) -> [n]`` of the parameters ``x`` ``[d]`` (see
:mod:`sam_tutorial.theory.problems`). With :math:`g_S(x)=\frac1{|S|}\sum_{i\in S}\nabla f_i(x)` and a batch
:math:`\gamma` of size :math:`b`, one step is :math:`x\leftarrow x-\eta\,D_\gamma(x)` with
(paper §2):

============ ===================================================================================
variant      update direction :math:`D_\gamma(x)`
============ ===================================================================================
``sgd``      :math:`g_\gamma(x)`
``usam``     :math:`g_\gamma(x+\rho\,g_\gamma(x))`
``n-usam``   :math:`g_\gamma(x+\rho\,\nabla f(x))`
``m-usam``   :math:`\frac mb\sum_j g_{I_j}(x+\rho\,g_{I_j}(x))`, :math:`\gamma=I_1\cup\dots\cup I_{b/m}`
``sam``      :math:`g_\gamma(x+\rho\,g_\gamma/\|g_\gamma\|)`
``n-sam``    :math:`g_\gamma(x+\rho\,\nabla f/\|\nabla f\|)`
``m-sam``    :math:`\frac mb\sum_j g_{I_j}(x+\rho\,g_{I_j}/\|g_{I_j}\|)`
============ ===================================================================================

Batches are uniform ``b``-subsets (``replacement=False``, the paper's "fixed cardinality"; the
default) or ``b`` indices drawn with replacement. Micro-batches are consecutive blocks of a batch
drawn in random order, so each is marginally a uniform ``m``-subset: the expected m-variant update
depends on ``m`` only.

>>> from sam_tutorial.theory.problems import make_quadratic_problem
>>> p = make_quadratic_problem(n=4, dim=2)
>>> x0 = torch.ones(2, dtype=torch.float64)
>>> discrete_trajectory(p, x0, "m-sam", eta=0.1, rho=0.05, b=4, m=2, n_steps=3, n_paths=5).shape
torch.Size([4, 5, 2])
"""


from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.func import grad, vmap

from sam_tutorial.config import check_int, check_nonneg, check_seed
from sam_tutorial.sgn.batches import batch_distribution
from sam_tutorial.sgn.monte_carlo import sample_batches

__all__ = [
    "ProblemFn",
    "VARIANTS",
    "Variant",
    "check_sizes",
    "discrete_trajectory",
    "expected_update",
    "parse_variant",
    "problem_size",
    "update_direction",
]


ProblemFn = Callable[[Tensor], Tensor]


VARIANTS = ("sgd", "usam", "n-usam", "m-usam", "sam", "n-sam", "m-sam")
"""The algorithms of the paper's §4.2 table."""


class Variant(NamedTuple):
    """A parsed variant name.

    Book: chapter 3, "The drift of each variant, step by step"; paper: the update rules behind Thms. 3.3-3.8.
    """

    name: str
    """one of :data:`VARIANTS`."""

    scope: str
    """The source of the perturbation, ``"none"`` (SGD), ``"batch"``, ``"full"`` (the full-data
    gradient) or ``"micro"`` (each micro-batch)."""

    normalize: bool
    """SAM (``True``) or USAM (``False``) perturbation."""


def parse_variant(name: str) -> Variant:
    """Parse a variant name.

    Book: chapter 3, "The drift of each variant, step by step"; paper: the update rules behind Thms. 3.3-3.8.

    Raises:
        ValueError: if ``name`` is not in :data:`VARIANTS`.

    >>> parse_variant("m-sam")
    Variant(name='m-sam', scope='micro', normalize=True)
    """
    if name not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(map(repr, VARIANTS))}; got {name!r}")
    if name == "sgd":
        return Variant(name, "none", False)
    scope = {"n": "full", "m": "micro"}.get(name.split("-")[0], "batch") if "-" in name else "batch"
    return Variant(name, scope, name.endswith("-sam") or name == "sam")


def check_sizes(n: int, variant: Variant, b: int, m: int | None, replacement: bool) -> int:
    """Validate ``b`` and ``m`` for ``n`` samples; return the size of one perturbation's batch.

    Book: chapter 3, "The drift of each variant, step by step"; paper: the update rules behind Thms. 3.3-3.8.

    Raises:
        ValueError: if ``b < 1``, ``b > n`` without replacement, ``m`` missing or not dividing ``b``
            for m-variants, or ``m`` given (other than ``b``) for a variant without micro-batches.

    >>> check_sizes(8, parse_variant("m-usam"), 4, 2, False)
    2
    """
    if isinstance(b, bool) or not isinstance(b, int) or b < 1 or (not replacement and b > n):
        limit = "" if replacement else f" and <= n = {n} (without replacement)"
        raise ValueError(f"b must be an integer >= 1{limit}; got {b!r}")
    if variant.scope == "micro":
        if isinstance(m, bool) or not isinstance(m, int) or m < 1 or b % m:
            raise ValueError(f"m must be a positive integer dividing b = {b} for {variant.name!r}; got {m!r}")
        return m
    if m is not None and m != b:
        raise ValueError(
            f"m is only used by 'm-usam' and 'm-sam' (or must equal b); got m={m!r} for {variant.name!r}"
        )
    return b


def problem_size(problem: ProblemFn, x: object, name: str = "x") -> int:
    """The number n of per-sample losses of ``problem`` at ``x`` (``[d]`` or ``[..., d]``: its first row).

    Book: chapter 3, "The drift of each variant, step by step"; paper: the update rules behind Thms. 3.3-3.8.

    Raises:
        ValueError: naming ``name`` if it is not a floating-point tensor, or the problem cannot take it
            (another dimension d or dtype than the problem's).

    >>> from sam_tutorial.theory.problems import make_quadratic_problem
    >>> problem_size(make_quadratic_problem(n=3, dim=2), torch.zeros(2, dtype=torch.float64))
    3
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() == 0 or x.shape[-1] == 0:
        found = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor [d] (or [n_paths, d]), got {found}")
    try:
        losses = problem(x.reshape(-1, x.shape[-1])[0])
    except (RuntimeError, IndexError, TypeError) as err:
        raise ValueError(f"{name} of shape {tuple(x.shape)} and dtype {x.dtype} does not fit the problem "
                         f"({type(err).__name__}: {err}); give it the problem's dimension d and dtype"
                         ) from err
    if losses.dim() != 1:
        raise ValueError(f"problem must return per-sample losses [n] at one point, got {tuple(losses.shape)}")
    if losses.dtype != x.dtype:
        raise ValueError(f"{name} has dtype {x.dtype} but the problem computes in {losses.dtype}; pass "
                         f"{name}.to({losses.dtype})")
    return int(losses.shape[-1])


def _weighted_grad(problem: ProblemFn) -> Callable[[Tensor, Tensor], Tensor]:
    """``(x, w) -> grad of w @ problem at x``: the gradient of a weighted batch loss."""
    return grad(lambda x, w: w @ problem(x))


def _direction(
    problem: ProblemFn, x: Tensor, descent: Tensor, perturb: Tensor | None, rho: float, normalize: bool
) -> Tensor:
    """Mean over rows ``j`` of ``grad(descent_j . problem)(x + rho * N(grad(perturb_j . problem)(x)))``."""
    wg = vmap(_weighted_grad(problem), in_dims=(None, 0))
    if perturb is None or rho == 0:
        return wg(x, descent).mean(0)
    p = wg(x, perturb)
    if normalize:
        p = p / p.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    return vmap(_weighted_grad(problem))(x + rho * p, descent).mean(0)


def _weights(index: Tensor, n: int, group: int, dtype: torch.dtype) -> Tensor:
    """Index rows ``[..., b]`` to weight rows ``[..., b/group, n]`` (``count/group`` per block)."""
    blocks = index.reshape(*index.shape[:-1], index.shape[-1] // group, group)
    out = torch.zeros(*blocks.shape[:-1], n, dtype=dtype, device=index.device)
    return out.scatter_add_(
        -1, blocks, torch.full(blocks.shape, 1.0 / group, dtype=dtype, device=index.device)
    )


def _plan(
    variant: Variant, batch_weights: Tensor, micro_weights: Tensor, n: int
) -> tuple[Tensor, Tensor | None]:
    """Descent and perturbation weight rows for one batch."""
    if variant.scope == "none":
        return batch_weights, None
    if variant.scope == "full":
        return batch_weights, torch.full_like(batch_weights, 1.0 / n)
    if variant.scope == "micro":
        return micro_weights, micro_weights
    return batch_weights, batch_weights


def update_direction(
    problem: ProblemFn, x: Tensor, variant: str, indices: Tensor, *, rho: float, m: int | None = None
) -> Tensor:
    r"""The direction :math:`D_\gamma(x)` of one step on the batch with sample ``indices`` (table above).

    Book: chapter 3, "The drift of each variant, step by step"; paper: the update rules behind Thms. 3.3-3.8.

    Args:
        problem: the problem, ``x [d] -> [n]``.
        x: parameters ``[d]``.
        variant: one of :data:`VARIANTS`.
        indices: sample indices ``[b]`` of the batch (micro-batches are consecutive blocks of ``m``).
        rho: perturbation radius.
        m: micro-batch size (m-variants).

    Returns:
        Tensor ``[d]``; the step is ``x - eta * direction``.

    Raises:
        ValueError: for an unknown variant or bad ``m``.

    >>> from sam_tutorial.theory.problems import make_quadratic_problem
    >>> p = make_quadratic_problem(n=4, dim=2)
    >>> x = torch.ones(2, dtype=torch.float64)
    >>> torch.allclose(update_direction(p, x, "sgd", torch.arange(4), rho=0.1), p.grads(x).mean(0))
    True
    """
    v = parse_variant(variant)
    n = problem_size(problem, x)
    check_sizes(n, v, indices.shape[0], m, replacement=True)
    indices = indices.to(x.device)
    whole = _weights(indices, n, indices.shape[0], x.dtype)
    size = m if m is not None else indices.shape[0]
    micro = _weights(indices, n, size, x.dtype) if v.scope == "micro" else whole
    descent, perturb = _plan(v, whole, micro, n)
    return _direction(problem, x, descent, perturb, rho, v.normalize)


def expected_update(
    problem: ProblemFn,
    x: Tensor,
    variant: str,
    *,
    rho: float,
    b: int,
    m: int | None = None,
    replacement: bool = False,
    max_batches: int = 4096,
    generator: torch.Generator | None = None,
) -> Tensor:
    r""":math:`\mathbb E_\gamma D_\gamma(x)`, the mean update direction over the batch law.

    Book: chapter 3, "Checking the drifts numerically (C3, C4)"; paper: Thms. 3.3-3.8.

    Exact by enumeration when there are at most ``max_batches`` batches (for m-variants: micro-batches
    of size ``m``, whose law alone fixes the mean), else a Monte Carlo average. n-variants need no
    enumeration: their direction is linear in the descent batch, so the mean is
    :math:`\nabla f(x+\rho\,\nabla f/\|\nabla f\|)` (or without the norm).

    Args:
        problem: the problem, ``x [d] -> [n]``.
        x: parameters ``[d]``.
        variant: one of :data:`VARIANTS`.
        rho: perturbation radius.
        b: batch size.
        m: micro-batch size (m-variants).
        replacement: the sampling scheme.
        max_batches: enumeration limit.
        generator: CPU generator for the Monte Carlo case.

    Returns:
        Tensor ``[d]``.

    Raises:
        ValueError: for an unknown variant or bad sizes.

    >>> from sam_tutorial.theory.problems import make_quadratic_problem
    >>> p = make_quadratic_problem(n=4, dim=2)
    >>> x = torch.ones(2, dtype=torch.float64)
    >>> torch.allclose(expected_update(p, x, "sgd", rho=0.0, b=2), p.grads(x).mean(0))
    True
    """
    v, n, size = _variant_sizes(problem, x, variant, b, m, replacement)
    if v.scope == "full":
        uniform = torch.full((1, n), 1.0 / n, dtype=x.dtype, device=x.device)
        return _direction(problem, x, uniform, uniform, rho, v.normalize)
    law = batch_distribution(
        n,
        size,
        replacement=replacement,
        max_batches=max_batches,
        generator=generator,
        dtype=x.dtype,
        device=x.device,
    )
    rows = law.weights.unsqueeze(1)  # one block per batch
    if v.scope == "none":
        dirs = vmap(lambda d: _direction(problem, x, d, None, rho, False))(rows)
    else:
        dirs = vmap(lambda d: _direction(problem, x, d, d, rho, v.normalize))(rows)
    return law.probs @ dirs


def discrete_trajectory(
    problem: ProblemFn,
    x0: Tensor,
    variant: str,
    *,
    eta: float,
    rho: float,
    b: int,
    m: int | None = None,
    n_steps: int,
    n_paths: int = 1,
    replacement: bool = False,
    seed: int = 0,
) -> Tensor:
    r"""``n_paths`` independent runs of :math:`x_{k+1}=x_k-\eta D_{\gamma_k}(x_k)`, batched with ``vmap``.

    Book: chapter 3, "The drift of each variant, step by step"; paper: the update rules behind Thms. 3.3-3.8.

    Args:
        problem: the problem, ``x [d] -> [n]``.
        x0: start ``[d]`` (shared by all paths) or ``[n_paths, d]``.
        variant: one of :data:`VARIANTS`.
        eta: learning rate :math:`\eta > 0`.
        rho: perturbation radius :math:`\rho\ge0`.
        b: batch size.
        m: micro-batch size (m-variants).
        n_steps: number of steps.
        n_paths: number of independent runs.
        replacement: sampling scheme of the batches.
        seed: seed of the CPU generator that draws the batches.

    Returns:
        Tensor ``[n_steps + 1, n_paths, d]`` (the start included).

    Raises:
        ValueError: for an unknown variant, bad sizes, ``eta <= 0``, ``rho < 0``, ``n_steps < 0``
            or ``n_paths < 1``.

    >>> from sam_tutorial.theory.problems import make_quadratic_problem
    >>> p = make_quadratic_problem(n=4, dim=2)
    >>> xs = discrete_trajectory(p, p.minimizer(), "sgd", eta=0.1, rho=0.0, b=4, n_steps=2)
    >>> torch.allclose(xs[-1, 0], p.minimizer())   # full batch at the minimiser: no motion
    True
    """
    v, n, size = _variant_sizes(problem, x0, variant, b, m, replacement, "x0")
    _check_run(eta, rho, n_steps, n_paths)
    check_seed("seed", seed)
    x = _start(x0, n_paths)
    gen = torch.Generator().manual_seed(seed)
    step = vmap(lambda x, d, p: _direction(problem, x, d, p, rho, v.normalize))
    sgd_step = vmap(lambda x, d: _direction(problem, x, d, None, rho, v.normalize))
    out = [x]
    for _ in range(n_steps):
        index = sample_batches(n, b, n_paths, replacement=replacement, generator=gen).to(x.device)
        whole = _weights(index, n, b, x.dtype)
        micro = _weights(index, n, size, x.dtype) if v.scope == "micro" else whole
        descent, perturb = _plan(v, whole, micro, n)
        d = sgd_step(x, descent) if perturb is None else step(x, descent, perturb)
        x = x - eta * d
        out.append(x)
    return torch.stack(out)


def _variant_sizes(
    problem: ProblemFn, x: object, variant: str, b: int, m: int | None, replacement: bool, name: str = "x"
) -> tuple[Variant, int, int]:
    """The checks every function of a variant at a point shares: ``(variant, n, size)`` from
    :func:`parse_variant`, :func:`problem_size` (naming ``name``) and :func:`check_sizes`."""
    v = parse_variant(variant)
    n = problem_size(problem, x, name)
    return v, n, check_sizes(n, v, b, m, replacement)


def _check_run(eta: float, rho: float, n_steps: int, n_paths: int) -> None:
    """The checks shared by the trajectory simulators (here, ``sde.euler_maruyama``, ``valley.simulate``)."""
    check_nonneg("eta", eta, positive=True)
    check_nonneg("rho", rho)
    check_int("n_steps", n_steps, 0)
    check_int("n_paths", n_paths)


def _start(x0: Tensor, n_paths: int) -> Tensor:
    """The ``[n_paths, d]`` start of a trajectory simulator from ``x0``, ``[d]`` or ``[n_paths, d]``."""
    x = x0.expand(n_paths, x0.shape[-1]).clone() if x0.dim() == 1 else x0.clone()
    if x.shape[0] != n_paths:
        raise ValueError(f"x0 must be [d] or [n_paths, d] = [{n_paths}, d]; got {tuple(x0.shape)}")
    return x
