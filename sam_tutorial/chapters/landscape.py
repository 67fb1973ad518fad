r"""The SAM family on a 2-D landscape: the real optimizers on a toy problem, and the geometry chapter 1
draws (loss grids, basins, the exact ascent direction on a circle, linear-stability thresholds).

A toy problem of :mod:`sam_tutorial.theory.problems` is a callable ``problem(x) -> per-sample losses [...,
n]``.
:class:`ProblemModule` wraps it as a :class:`torch.nn.Module` whose only parameter is the point
:math:`x`, so that :class:`~sam_tutorial.optim.sam.SAM`, :class:`~sam_tutorial.optim.msam.MSAM` and the rest
run on it through their public ``step(inputs, targets, loss_fn)``: the inputs are sample indices and
:func:`per_sample_loss` passes the model's output through.

>>> from sam_tutorial.optim import SAM
>>> from sam_tutorial.theory.problems import make_sharp_flat_problem
>>> p = make_sharp_flat_problem()
>>> run = run_optimizer(p, torch.tensor([-2.4, 0.8], dtype=torch.float64),
...                     lambda model, base: SAM(model, base, rho=0.1), lr=0.1, b=4, n_steps=5)
>>> run.points.shape, run.batches.shape
(torch.Size([6, 2]), torch.Size([5, 4]))

The linear-stability thresholds that predict when SAM and USAM leave a sharp minimum are in
:mod:`sam_tutorial.theory.stability`.
"""


from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import grad, hessian, jacrev

from sam_tutorial.config import check_nonneg
from sam_tutorial.engine.cost import Factory
from sam_tutorial.sgn.batches import batch_distribution
from sam_tutorial.sgn.monte_carlo import sample_batches
from sam_tutorial.theory.recursions import ProblemFn

__all__ = [
    "ProblemModule",
    "Run",
    "ascent_angle",
    "ascent_direction",
    "batch_loss",
    "first_crossing",
    "first_order_angle_slope",
    "loss_grid",
    "per_sample_loss",
    "perturbations",
    "run_optimizer",
]






class ProblemModule(nn.Module):
    """A toy problem as a module: the parameter ``x`` is the point, ``forward(index)`` returns the
    per-sample losses :math:`f_i(x)` for the sample indices in ``index``.

    Args:
        problem: ``problem(x) -> [..., n]``.
        x0: the starting point ``[d]`` (copied).
    """

    def __init__(self, problem: Callable[[Tensor], Tensor], x0: Tensor) -> None:
        super().__init__()
        self.problem = problem
        self.x = nn.Parameter(x0.detach().clone())

    def forward(self, index: Tensor) -> Tensor:
        return self.problem(self.x)[index]


def per_sample_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """The ``loss_fn`` for a :class:`ProblemModule`: its outputs already are per-sample losses."""
    return outputs


class Run(NamedTuple):
    """The result of :func:`run_optimizer`."""

    points: Tensor
    """``[n_steps + 1, d]``, the start included."""

    batches: Tensor
    """``[n_steps, b]``, the sample indices of each step."""

    perturbation_norms: Tensor
    r"""``[n_steps]``, :math:`\|\epsilon\|` of each step (0 for SGD)."""


def run_optimizer(
    problem: ProblemFn,
    x0: Tensor,
    make_optimizer: Factory,
    *,
    lr: float,
    b: int,
    n_steps: int,
    seed: int = 0,
    batches: Tensor | None = None,
) -> Run:
    """Run an optimizer of :mod:`sam_tutorial.optim` on a toy problem, plain SGD as its base.

    Each step draws a uniform ``b``-subset of the ``n`` samples (without replacement) from a CPU
    generator seeded with ``seed``, so runs with the same seed see the same batches.

    Args:
        problem: ``problem(x) -> [..., n]``.
        x0: start ``[d]``.
        make_optimizer: ``(model, base) -> optimizer``, e.g. ``lambda m, base: SAM(m, base, rho=0.1)``.
        lr: learning rate of the base SGD.
        b: batch size.
        n_steps: number of steps.
        seed: seed of the batches.
        batches: ``[n_steps, b]`` indices to use instead of drawing them.

    Returns:
        :class:`Run`.

    Raises:
        ValueError: for ``lr <= 0``, ``n_steps < 0`` or ``b`` outside ``[1, n]``.
    """
    n = problem(x0).shape[-1]
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}")
    if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= n:
        raise ValueError(f"b must be an integer in [1, n] = [1, {n}], got {b!r}")
    if batches is None:
        batches = sample_batches(n, b, n_steps, generator=torch.Generator().manual_seed(seed))
    elif batches.shape != (n_steps, b):
        raise ValueError(
            f"batches must have shape [n_steps, b] = [{n_steps}, {b}], got {tuple(batches.shape)}"
        )
    model = ProblemModule(problem, x0)
    opt = make_optimizer(model, torch.optim.SGD(model.parameters(), lr=lr))
    points, norms = [model.x.detach().clone()], []
    for index in batches:
        stats = opt.step(index, index, per_sample_loss)
        points.append(model.x.detach().clone())
        norms.append(stats.perturbation_norm.detach().to(x0.dtype))
    empty = torch.zeros(0, dtype=x0.dtype)
    return Run(torch.stack(points), batches, torch.stack(norms) if norms else empty)


def batch_loss(problem: ProblemFn, indices: Tensor | None = None) -> ProblemFn:
    """``x [..., d] -> f_S(x) [...]``, the mean loss over the sample ``indices`` (all samples if ``None``)."""
    if indices is None:
        return lambda x: problem(x).mean(-1)
    return lambda x: problem(x)[..., indices].mean(-1)


def loss_grid(
    problem: ProblemFn,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    resolution: int = 200,
) -> tuple[Tensor, Tensor, Tensor]:
    """The full loss :math:`f` on a ``resolution x resolution`` grid of a 2-D problem.

    Returns:
        ``(xs [r], ys [r], f [r, r])`` with ``f[i, j] = f(xs[j], ys[i])`` (matplotlib's ``contour``
        convention).
    """
    xs = torch.linspace(*xlim, resolution, dtype=torch.float64)
    ys = torch.linspace(*ylim, resolution, dtype=torch.float64)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xs, ys, problem(torch.stack([xx, yy], -1)).mean(-1)


def first_crossing(rhos: Sequence[float], values: Sequence[float], level: float = 0.5) -> float:
    """The first ``rho`` at which ``values`` (ordered by increasing ``rho > 0``) reaches ``level``,
    interpolated linearly in ``log rho``; ``nan`` if it never does.

    >>> round(first_crossing([0.1, 0.2, 0.4], [0.0, 0.25, 1.0]), 4)
    0.252
    """
    r, v = np.log(np.asarray(rhos, dtype=float)), np.asarray(values, dtype=float)
    above = np.nonzero(v >= level)[0]
    if above.size == 0:
        return float("nan")
    j = int(above[0])
    if j == 0:
        return float(np.exp(r[0]))
    t = (level - v[j - 1]) / (v[j] - v[j - 1])
    return float(np.exp(r[j - 1] + t * (r[j] - r[j - 1])))


def _argmax_on_circle(fn: ProblemFn, x: Tensor, rho: float, n_angles: int, iters: int) -> Tensor:
    thetas = 2 * math.pi * torch.arange(n_angles, dtype=x.dtype) / n_angles
    units = torch.stack([thetas.cos(), thetas.sin()], -1)
    best = thetas[fn(x + rho * units).argmax()]
    step = 2 * math.pi / n_angles
    dfn = grad(fn)

    def slope(theta: Tensor) -> Tensor:  # d/dθ f(x + ρ u(θ)), up to the factor ρ
        u = torch.stack([theta.cos(), theta.sin()])
        return dfn(x + rho * u) @ torch.stack([-theta.sin(), theta.cos()])

    lo, hi = best - step, best + step
    if not (slope(lo) > 0 and slope(hi) < 0):
        return best
    for _ in range(iters):  # bisection on the tangential derivative: linear, not square-root, precision
        mid = (lo + hi) / 2
        if slope(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def ascent_direction(fn: ProblemFn, x: Tensor, rho: float, *, n_angles: int = 720, iters: int = 60) -> Tensor:
    r"""The exact maximiser :math:`u^*` of :math:`f(x+\rho u)` over unit vectors :math:`u` of the plane.

    The best of ``n_angles`` equally spaced angles, then ``iters`` bisection steps on the tangential
    derivative :math:`\frac{d}{d\theta}f(x+\rho u(\theta))` around it.

    Args:
        fn: ``x [..., 2] -> [...]``, e.g. :func:`batch_loss`.
        x: the point ``[2]``.
        rho: radius > 0.
        n_angles: size of the first grid.
        iters: bisection steps.

    Raises:
        ValueError: for ``x`` not of shape ``[2]`` or ``rho <= 0``.
    """
    if x.shape != (2,):
        raise ValueError(f"x must be a point of the plane, shape [2]; got {tuple(x.shape)}")
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho!r}")
    theta = _argmax_on_circle(fn, x, rho, n_angles, iters)
    return torch.stack([theta.cos(), theta.sin()])


def ascent_angle(fn: ProblemFn, x: Tensor, rho: float, **kwargs: int) -> Tensor:
    r"""The angle (radians) between the exact ascent direction :math:`u^*` of :func:`ascent_direction`
    and SAM's first-order solution :math:`\nabla f/\|\nabla f\|`."""
    g = grad(fn)(x)
    u = ascent_direction(fn, x, rho, **kwargs)
    cos = (u @ g / g.norm()).clamp(-1.0, 1.0)
    return torch.arccos(cos)


def first_order_angle_slope(fn: ProblemFn, x: Tensor) -> Tensor:
    r"""The constant :math:`C` in :func:`ascent_angle` :math:`=C\rho+O(\rho^2)`:
    :math:`C=\|(I-\hat g\hat g^\top)H\hat g\|/\|g\|`, with :math:`g=\nabla f(x)`,
    :math:`\hat g=g/\|g\|`, :math:`H=\nabla^2 f(x)`.

    On the unit circle, :math:`u=\hat g+\delta` with :math:`\delta\perp\hat g` is stationary for
    :math:`\rho\langle g,u\rangle+\frac{\rho^2}2u^\top Hu` when :math:`-\|g\|\delta+
    \rho(I-\hat g\hat g^\top)H\hat g=O(\rho^2)`.
    """
    g = grad(fn)(x)
    h = hessian(fn)(x)
    unit = g / g.norm()
    hg = h @ unit
    return (hg - (unit @ hg) * unit).norm() / g.norm()


def perturbations(
    problem: ProblemFn,
    x: Tensor,
    m: int,
    *,
    rho: float,
    normalize: bool = True,
    max_batches: int = 4096,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    r"""Every perturbation :math:`\epsilon_I` that a batch :math:`I` of ``m`` samples can produce at
    ``x``, with its probability: :math:`\rho\,g_I/\|g_I\|` (SAM) or :math:`\rho\,g_I` (USAM), for
    uniform ``m``-subsets :math:`I` (exact enumeration up to ``max_batches`` subsets, else a Monte
    Carlo sample of that many). ``m = n`` is n-SAM's single perturbation.

    Returns:
        ``(eps [N, d], probs [N])``.

    Raises:
        ValueError: for ``m`` outside ``[1, n]`` or ``rho < 0``.
    """
    check_nonneg("rho", rho)
    grads = jacrev(problem)(x)  # [n, d]
    law = batch_distribution(
        grads.shape[0], m, max_batches=max_batches, dtype=x.dtype,
        generator=torch.Generator().manual_seed(seed),
    )
    g = law.weights @ grads
    if normalize:
        g = g / g.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
    return rho * g, law.probs
