r"""The extended SDE of the SAM family (paper §4): drift, diffusion, implicit regularisers, a batched
Euler–Maruyama solver, and weak errors against the discrete algorithms.

Each variant :math:`\in` :data:`~sam_tutorial.theory.recursions.VARIANTS` is modelled, for small
:math:`\eta` and :math:`\rho` (sent to zero independently, Definition 3.2), by

.. math::

    dX_t=-\nabla\big(f+R(X_t)\big)\,dt+\sqrt{\eta\,\Sigma(X_t)}\,dW_t,\qquad t\leftrightarrow k\eta,

with the implicit regulariser :math:`R` of the paper's §4.2 table:

============ =============== ===============================================================================
variant      theorem         :math:`R(x)`
============ =============== ===============================================================================
``sgd``      Li–Tai–E        :math:`0`
``usam``     Thm 3.3         :math:`\frac\rho2\|\nabla f\|^2+\frac\rho2 c_b\operatorname{tr}V`
``n-usam``   Thm 3.4         :math:`\frac\rho2\|\nabla f\|^2` (no SGN term)
``m-usam``   Thm 3.5         :math:`\frac\rho2\|\nabla f\|^2+\frac\rho2 c_m\operatorname{tr}V`
``sam``      Thms 3.6–3.8 †  :math:`\rho\,\mathbb E\|g_\gamma\|`, :math:`|\gamma|=b`
``n-sam``    Thms 3.6–3.8 †  :math:`\rho\|\nabla f\|`
``m-sam``    Thms 3.6–3.8 †  :math:`\rho\,\mathbb E\|g_I\|`, :math:`|I|=m`
============ =============== ===============================================================================

(†: which of Theorems 3.6–3.8 covers which variant is UNCONFIRMED.)

:math:`c_k` is the batch-noise factor of :func:`sam_tutorial.sgn.batches.batch_noise_coefficient`:
:math:`1/k` with replacement (the paper's printed :math:`\frac{\rho}{2|\gamma|}`, :math:`\frac\rho{2m}`),
:math:`\frac{n-k}{k(n-1)}` for the default sampling without replacement. It is exact to first order
in :math:`\rho` for the chosen scheme (:math:`\mathbb E\|g_\gamma\|^2=\|\nabla f\|^2+c_b
\operatorname{tr}V`, claim C1). ``include_eta_term=True`` adds the second-order SME term
:math:`\frac\eta4\|\nabla f\|^2` (whether the paper keeps it is UNCONFIRMED; default off).

The diffusion is the leading-order covariance of one step's direction, :math:`\Sigma=c_bV`, the same
for every variant: at :math:`\rho=0` every direction is :math:`g_\gamma`, and for m-variants
:math:`\frac m{b}\Sigma^m` with :math:`\Sigma^m\approx c_mV` reduces to it with replacement. The
paper's :math:`O(\rho)` corrections to :math:`\Sigma^U,\Sigma^n,\Sigma^m` are UNCONFIRMED and left out.

>>> from sam_tutorial.theory.problems import make_quadratic_problem
>>> p = make_quadratic_problem(n=6, dim=2)
>>> x = torch.ones(2, dtype=torch.float64)
>>> bool(implicit_regularizer(p, x, "m-usam", rho=0.1, b=6, m=1)
...      > implicit_regularizer(p, x, "usam", rho=0.1, b=6))   # smaller m, stronger tr V penalty
True
"""


from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.func import grad, jacrev, vmap

from sam_tutorial.config import check_int, check_seed
from sam_tutorial.sgn.batches import BatchDistribution, batch_distribution, batch_noise_coefficient
from sam_tutorial.theory.recursions import (
    ProblemFn,
    Variant,
    _check_run,
    _start,
    _variant_sizes,
    discrete_trajectory,
    problem_size,
)

__all__ = ["WeakError", "diffusion_matrix", "drift", "euler_maruyama", "implicit_regularizer", "weak_error"]


def _setup(
    problem: ProblemFn,
    x: Tensor,
    variant: str,
    b: int,
    m: int | None,
    replacement: bool,
    max_batches: int,
    name: str = "x",
) -> tuple[Variant, int, int, BatchDistribution | None]:
    v, n, size = _variant_sizes(problem, x, variant, b, m, replacement, name)
    law = None
    if v.normalize and v.scope != "full":
        law = batch_distribution(
            n, size, replacement=replacement, max_batches=max_batches, dtype=x.dtype, device=x.device
        )
    return v, n, size, law


def _regularizer_fn(
    problem: ProblemFn,
    v: Variant,
    n: int,
    size: int,
    rho: float,
    replacement: bool,
    law: BatchDistribution | None,
) -> Callable[[Tensor], Tensor]:
    """``x [d] -> R(x)`` (a pure function of ``x``, differentiable with ``torch.func``)."""
    coeff = 0.0 if v.scope == "full" else batch_noise_coefficient(n, size, replacement=replacement)

    def reg(x: Tensor) -> Tensor:
        if v.scope == "none" or rho == 0:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        g = jacrev(problem)(x)  # [n, d]
        mean = g.mean(0)
        if not v.normalize:
            trace_v = (g - mean).square().sum(1).mean()
            return 0.5 * rho * (mean.square().sum() + coeff * trace_v)
        if v.scope == "full":
            return rho * torch.linalg.vector_norm(mean)
        assert law is not None
        return rho * (law.probs @ torch.linalg.vector_norm(law.weights @ g, dim=-1))

    return reg


def _over_leading(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Apply ``fn`` on ``[d]`` to ``x`` of shape ``[..., d]``."""
    if x.dim() == 1:
        return fn(x)
    flat = x.reshape(-1, x.shape[-1])
    out = vmap(fn)(flat)
    return out.reshape(*x.shape[:-1], *out.shape[1:])


def implicit_regularizer(
    problem: ProblemFn,
    x: Tensor,
    variant: str,
    *,
    rho: float,
    b: int,
    m: int | None = None,
    replacement: bool = False,
    max_batches: int = 4096,
) -> Tensor:
    r"""The implicit regulariser :math:`R(x)` of ``variant`` (module table), differentiable in ``x``.

    Book: chapter 3, "The implicit regulariser, and what it predicts for m-sharpness"; paper: Thms. 3.3-3.8,
    Prop. 3.9.

    Args:
        problem: the problem, ``x [d] -> [n]``.
        x: ``[d]`` or ``[..., d]``.
        variant: one of :data:`~sam_tutorial.theory.recursions.VARIANTS`.
        rho: perturbation radius.
        b: batch size.
        m: micro-batch size (m-variants).
        replacement: the sampling scheme (sets :math:`c_b`, :math:`c_m` and the law of the batches).
        max_batches: the expectation over batches of the SAM variants is exact when there are at
            most this many batches, else a Monte Carlo average over that many (seed 0).

    Returns:
        Tensor of shape ``x.shape[:-1]``.

    Raises:
        ValueError: for an unknown variant or bad sizes.

    >>> from sam_tutorial.theory.problems import make_quadratic_problem
    >>> p = make_quadratic_problem(n=4, dim=2)
    >>> x = torch.ones(2, dtype=torch.float64)
    >>> g = p.grads(x).mean(0)
    >>> torch.allclose(implicit_regularizer(p, x, "n-usam", rho=0.2, b=2), 0.1 * g.square().sum())
    True
    """
    v, n, size, law = _setup(problem, x, variant, b, m, replacement, max_batches)
    return _over_leading(_regularizer_fn(problem, v, n, size, rho, replacement, law), x)


def drift(
    problem: ProblemFn,
    x: Tensor,
    variant: str,
    *,
    rho: float,
    b: int,
    m: int | None = None,
    replacement: bool = False,
    include_eta_term: bool = False,
    eta: float | None = None,
    max_batches: int = 4096,
) -> Tensor:
    r"""The drift :math:`-\nabla\big(f+R+[\tfrac\eta4\|\nabla f\|^2]\big)(x)` of ``variant``.

    Book: chapter 3, "The drift of each variant, step by step"; paper: Thms. 3.3-3.8.

    Its negative is the mean update direction of the discrete algorithm up to :math:`O(\rho^2)`
    (claims C3, C4; see :func:`sam_tutorial.theory.recursions.expected_update`).

    Args:
        problem: the problem, ``x [d] -> [n]``.
        x: ``[d]`` or ``[..., d]``.
        variant: one of :data:`~sam_tutorial.theory.recursions.VARIANTS`.
        rho: perturbation radius.
        b: batch size.
        m: micro-batch size (m-variants).
        replacement: the sampling scheme.
        include_eta_term: add the second-order SME term :math:`\frac\eta4\|\nabla f\|^2`.
        eta: the learning rate, needed with ``include_eta_term``.
        max_batches: see :func:`implicit_regularizer`.

    Returns:
        Tensor of the shape of ``x``.

    Raises:
        ValueError: for an unknown variant, bad sizes, or ``include_eta_term`` without ``eta > 0``.

    >>> from sam_tutorial.theory.problems import make_quadratic_problem
    >>> p = make_quadratic_problem(n=4, dim=2)
    >>> x = torch.ones(2, dtype=torch.float64)
    >>> torch.allclose(drift(p, x, "sgd", rho=0.0, b=2), -p.grads(x).mean(0))
    True
    """
    if include_eta_term and not (eta is not None and eta > 0):
        raise ValueError(f"include_eta_term=True needs eta > 0, got eta={eta!r}")
    v, n, size, law = _setup(problem, x, variant, b, m, replacement, max_batches)
    reg = _regularizer_fn(problem, v, n, size, rho, replacement, law)
    quarter_eta = 0.25 * eta if include_eta_term and eta is not None else 0.0

    def potential(z: Tensor) -> Tensor:
        total = problem(z).mean() + reg(z)
        if quarter_eta:
            total = total + quarter_eta * grad(lambda y: problem(y).mean())(z).square().sum()
        return total

    return -_over_leading(grad(potential), x)


def diffusion_matrix(problem: ProblemFn, x: Tensor, *, b: int, replacement: bool = False) -> Tensor:
    r"""The leading-order diffusion :math:`\Sigma(x)=c_b V(x)`, shape ``[..., d, d]`` (module docstring).

    Book: chapter 3, "SGD's stochastic modified equation"; paper: the diffusion of Thms. 3.3-3.5.

    Args:
        problem: the problem, ``x [d] -> [n]``.
        x: ``[d]`` or ``[..., d]``.
        b: batch size.
        replacement: the sampling scheme (sets :math:`c_b`).

    Raises:
        ValueError: for bad ``b``.

    >>> from sam_tutorial.theory.problems import make_quadratic_problem
    >>> p = make_quadratic_problem(n=4, dim=2)
    >>> x = torch.ones(2, dtype=torch.float64)
    >>> torch.allclose(diffusion_matrix(p, x, b=4).trace(), torch.tensor(0.0, dtype=torch.float64))
    True
    """
    n = problem_size(problem, x)
    coeff = batch_noise_coefficient(n, b, replacement=replacement)

    def sigma(z: Tensor) -> Tensor:
        g = jacrev(problem)(z)
        c = g - g.mean(0)
        return coeff * (c.T @ c) / n

    return _over_leading(sigma, x)


# The keyword signature repeats recursions.discrete_trajectory's on purpose: weak_error runs both with
# the same arguments, and a reader swaps one for the other.
def euler_maruyama(
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
    substeps: int = 1,
    noise: bool = True,
    replacement: bool = False,
    include_eta_term: bool = False,
    seed: int = 0,
    max_batches: int = 4096,
) -> Tensor:
    r"""``n_paths`` Euler–Maruyama paths of the variant's SDE, recorded at the times :math:`k\eta`.

    Book: chapter 3, "Euler–Maruyama paths against the discrete algorithm (C5)"; paper: Def. 3.2.

    With step :math:`h=\eta/\text{substeps}`:
    :math:`X\leftarrow X+h\,b(X)+\sqrt{\eta h}\,\sqrt{c_b/n}\,G_c(X)^\top\zeta`,
    :math:`\zeta\sim N(0,I_n)`, where :math:`G_c` are the centred per-sample gradients, so the noise
    has covariance exactly :math:`\eta h\,c_bV(X)` and no matrix square root is needed.

    Args:
        problem: the problem, ``x [d] -> [n]``.
        x0: start ``[d]`` (shared) or ``[n_paths, d]``.
        variant: one of :data:`~sam_tutorial.theory.recursions.VARIANTS`.
        eta: learning rate (the SDE's time scale).
        rho: perturbation radius.
        b: batch size.
        m: micro-batch size (m-variants).
        n_steps: number of :math:`\eta`-intervals.
        n_paths: number of independent paths.
        substeps: Euler–Maruyama steps per :math:`\eta`.
        noise: ``False`` drops the diffusion (the ODE of the drift).
        replacement: the sampling scheme.
        include_eta_term: see :func:`drift`.
        seed: seed of the Gaussian increments (generator on ``x0``'s device).
        max_batches: see :func:`implicit_regularizer`.

    Returns:
        Tensor ``[n_steps + 1, n_paths, d]``.

    Raises:
        ValueError: for an unknown variant, bad sizes, ``eta <= 0``, ``rho < 0``, ``n_steps < 0``,
            ``n_paths < 1`` or ``substeps < 1``.

    >>> from sam_tutorial.theory.problems import make_quadratic_problem
    >>> p = make_quadratic_problem(n=4, dim=2)
    >>> euler_maruyama(p, torch.ones(2, dtype=torch.float64), "usam", eta=0.1, rho=0.05, b=2,
    ...                n_steps=5, n_paths=3).shape
    torch.Size([6, 3, 2])
    """
    _check_run(eta, rho, n_steps, n_paths)
    check_int("substeps", substeps)
    v, n, size, law = _setup(problem, x0, variant, b, m, replacement, max_batches, "x0")
    reg = _regularizer_fn(problem, v, n, size, rho, replacement, law)
    quarter_eta = 0.25 * eta if include_eta_term else 0.0

    def potential(z: Tensor) -> Tensor:
        total = problem(z).mean() + reg(z)
        if quarter_eta:
            total = total + quarter_eta * grad(lambda y: problem(y).mean())(z).square().sum()
        return total

    neg_drift = vmap(grad(potential))
    per_sample = vmap(jacrev(problem))
    scale = (batch_noise_coefficient(n, b, replacement=replacement) / n) ** 0.5
    x = _start(x0, n_paths)
    gen = torch.Generator(device=x.device).manual_seed(check_seed("seed", seed))
    h = eta / substeps
    out = [x]
    for _ in range(n_steps):
        for _ in range(substeps):
            step = -h * neg_drift(x)
            if noise:
                g = per_sample(x)
                centred = g - g.mean(1, keepdim=True)
                zeta = torch.randn(n_paths, n, generator=gen, dtype=x.dtype, device=x.device)
                step = step + (eta * h) ** 0.5 * scale * torch.einsum("pn,pnd->pd", zeta, centred)
            x = x + step
        out.append(x)
    return torch.stack(out)


class WeakError(NamedTuple):
    r"""Result of :func:`weak_error`.

    Book: chapter 3, "Euler–Maruyama paths against the discrete algorithm (C5)"; paper: Def. 3.2.
    """

    times: Tensor
    r"""``[n_steps + 1]``, :math:`t=k\eta`."""

    discrete: Tensor
    r"""``[n_steps + 1]``, Monte Carlo mean of the test function along the algorithm."""

    sde: Tensor
    r"""``[n_steps + 1]``, the same along the SDE."""

    stderr: Tensor
    r"""``[n_steps + 1]``, the Monte Carlo standard error of ``discrete - sde``."""

    error: Tensor
    r"""0-d, :math:`\max_k|\mathbb E\,\varphi(x_k)-\mathbb E\,\varphi(X_{k\eta})|`."""


def weak_error(
    problem: ProblemFn,
    x0: Tensor,
    variant: str,
    *,
    eta: float,
    rho: float,
    b: int,
    m: int | None = None,
    horizon: float,
    n_paths: int,
    test_fn: Callable[[Tensor], Tensor] | None = None,
    substeps: int = 4,
    replacement: bool = False,
    include_eta_term: bool = False,
    seed: int = 0,
) -> WeakError:
    r"""The weak error :math:`\max_{k\le T/\eta}|\mathbb E\varphi(x_k)-\mathbb E\varphi(X_{k\eta})|`
    between the discrete algorithm and its SDE (Definition 3.2, claim C5), by Monte Carlo.

    Book: chapter 3, "Euler–Maruyama paths against the discrete algorithm (C5)"; paper: Def. 3.2.

    Args:
        problem: the problem, ``x [d] -> [n]``.
        x0: start ``[d]``.
        variant: one of :data:`~sam_tutorial.theory.recursions.VARIANTS`.
        eta: learning rate.
        rho: perturbation radius.
        b: batch size.
        m: micro-batch size (m-variants).
        horizon: :math:`T`; ``round(T / eta)`` steps are taken.
        n_paths: Monte Carlo paths of each process.
        test_fn: :math:`\varphi`, ``[..., d] -> [...]`` (default: the training loss :math:`f`).
        substeps: Euler–Maruyama steps per :math:`\eta`.
        replacement: the sampling scheme.
        include_eta_term: see :func:`drift`.
        seed: the discrete runs use ``seed``, the SDE ``seed + 1``.

    Returns:
        :class:`WeakError`.

    >>> from sam_tutorial.theory.problems import make_quadratic_problem
    >>> p = make_quadratic_problem(n=4, dim=2)
    >>> r = weak_error(p, torch.ones(2, dtype=torch.float64), "usam", eta=0.1, rho=0.05, b=2,
    ...                horizon=0.5, n_paths=64)
    >>> r.times.shape
    torch.Size([6])
    """
    n_steps = max(1, round(horizon / eta))
    phi = test_fn if test_fn is not None else (lambda z: problem(z).mean(-1))
    common: dict[str, Any] = dict(eta=eta, rho=rho, b=b, m=m, n_steps=n_steps, n_paths=n_paths,
                                  replacement=replacement)
    xs = discrete_trajectory(problem, x0, variant, seed=seed, **common)
    ys = euler_maruyama(
        problem, x0, variant, substeps=substeps, include_eta_term=include_eta_term, seed=seed + 1, **common
    )
    a, c = phi(xs), phi(ys)
    stderr = ((a.var(1) + c.var(1)) / n_paths).sqrt()
    da, dc = a.mean(1), c.mean(1)
    times = eta * torch.arange(n_steps + 1, dtype=x0.dtype)
    return WeakError(times, da, dc, stderr, (da - dc).abs().max())
