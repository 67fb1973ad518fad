r"""A valley of minima along which only the stochastic gradient noise changes (chapter 4).

Four kinds of samples, :math:`(s_k,b_k)\in\{+1,-1\}^2`, each ``copies`` times
(:math:`n=4\cdot\text{copies}`), in the plane :math:`x=(u,v)`:

.. math::

    f_i(u,v)=\tfrac12\,(1+\kappa s_iu)\,(v-b_i)^2 .

Because the kinds are balanced (:math:`\overline s=\overline b=\overline{sb}=0`), the training loss is
:math:`f(u,v)=\frac12(1+v^2)` for *every* :math:`u`: the line :math:`v=0` is a valley of minima, all of
loss :math:`\frac12`, with the same Hessian :math:`\operatorname{diag}(0,1)` everywhere (so
:math:`\operatorname{tr}H=\lambda_{\max}=1` along it). It is not an interpolating valley: every
per-sample gradient is non-zero on it. Only the per-sample curvatures :math:`1\pm\kappa u` change
along the valley, and with them the SGN:

.. math::

    \operatorname{tr}V(u,v)=(1+\kappa^2u^2)(1+v^2)-v^2+\tfrac{\kappa^2}4(v^4+6v^2+1),
    \qquad \partial_u\operatorname{tr}V=2\kappa^2u\,(1+v^2).

So SGD, GD and n-USAM have no mean motion along :math:`u` (:math:`\partial_uf\equiv0`), while the
USAM family's drift (paper Theorems 3.3, 3.5) on the floor is
:math:`\dot u=-\frac\rho2c_m\partial_u\operatorname{tr}V=-\rho c_m\kappa^2u`, i.e.
:math:`u(t)=u_0e^{-\rho c_m\kappa^2t}` with :math:`t=k\eta`; the normalised family's is
:math:`\dot u=-\rho\,\partial_u\mathbb E\|g_I\|`, computed here exactly by enumerating how many
samples of each kind a micro-batch holds (:func:`expected_grad_norm`).

>>> p = ValleyProblem(kappa=1.0)
>>> x = torch.tensor([0.5, 0.0], dtype=torch.float64)
>>> float(p(x).mean()), float(p.trace_V(x))
(0.5, 1.5)
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from sam_tutorial.config import check_int, check_seed
from sam_tutorial.sgn.batches import batch_noise_coefficient
from sam_tutorial.sgn.monte_carlo import sample_batches
from sam_tutorial.theory.recursions import _check_run, _start, _variant_sizes, parse_variant

__all__ = [
    "KINDS",
    "ValleyProblem",
    "expected_grad_norm",
    "kind_count_law",
    "predicted_u",
    "simulate",
    "usam_rate",
]

KINDS = ((1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0))
"""The four kinds :math:`(s,b)`; sample :math:`i` is of kind ``i % 4``."""

class ValleyProblem:
    r"""The valley problem of the module docstring, a callable ``x [..., 2] -> [..., n]``.

    Book: chapter 4, "A valley of minima where only the noise changes".

    Args:
        kappa: :math:`\kappa`, how fast the per-sample curvatures change along the valley
            (they stay positive for :math:`|u|<1/\kappa`).
        copies: samples of each kind (``n = 4 * copies``).
        dtype: dtype of the problem.

    Raises:
        ValueError: for ``kappa <= 0`` or ``copies < 1``.
    """

    def __init__(self, kappa: float = 1.0, copies: int = 1, dtype: torch.dtype = torch.float64) -> None:
        if not kappa > 0:
            raise ValueError(f"kappa must be > 0, got {kappa!r}")
        self.kappa, self.copies = float(kappa), check_int("copies", copies)
        kinds = torch.tensor(KINDS, dtype=dtype).repeat(copies, 1)
        self.s, self.b = kinds[:, 0], kinds[:, 1]
        self.n, self.dim = 4 * copies, 2

    def __call__(self, x: Tensor) -> Tensor:
        u, v = x[..., :1], x[..., 1:2]
        return 0.5 * (1 + self.kappa * self.s * u) * (v - self.b).square()

    def kind_grads(self, x: Tensor) -> Tensor:
        r"""Gradients of the four kinds, ``[..., 4, 2]`` (closed form)."""
        s, b = self.s[:4], self.b[:4]
        u, v = x[..., :1], x[..., 1:2]
        return torch.stack([0.5 * self.kappa * s * (v - b).square(), (1 + self.kappa * s * u) * (v - b)], -1)

    def loss(self, x: Tensor) -> Tensor:
        r""":math:`f(u,v)=\frac12(1+v^2)`, shape ``[...]``."""
        return 0.5 * (1 + x[..., 1].square())

    def trace_V(self, x: Tensor) -> Tensor:
        r""":math:`\operatorname{tr}V(u,v)` in closed form, shape ``[...]``."""
        k2, u, v = self.kappa**2, x[..., 0], x[..., 1]
        return (1 + k2 * u**2) * (1 + v**2) - v**2 + 0.25 * k2 * (v**4 + 6 * v**2 + 1)

    def grad_trace_V(self, x: Tensor) -> Tensor:
        r""":math:`\nabla\operatorname{tr}V(u,v)` in closed form, shape ``[..., 2]``."""
        k2, u, v = self.kappa**2, x[..., 0], x[..., 1]
        du = 2 * k2 * u * (1 + v**2)
        dv = 2 * (1 + k2 * u**2) * v - 2 * v + 0.25 * k2 * (4 * v**3 + 12 * v)
        return torch.stack([du, dv], -1)


def kind_count_law(m: int, *, replacement: bool = True, copies: int = 1) -> tuple[Tensor, Tensor]:
    """The law of how many samples of each kind a uniformly drawn micro-batch of size ``m`` holds.

    Book: chapter 4, "A valley of minima where only the noise changes".

    Returns:
        ``(counts [K, 4], probs [K])``: multinomial probabilities with replacement, multivariate
        hypergeometric ones without (``m <= 4 * copies``).

    Raises:
        ValueError: for ``m < 1``, or ``m > 4 * copies`` without replacement.

    >>> counts, probs = kind_count_law(2)
    >>> len(probs), float(probs.sum())
    (10, 1.0)
    """
    m, copies = check_int("m", m), check_int("copies", copies)
    if not replacement and m > 4 * copies:
        raise ValueError(f"m must be <= n = {4 * copies} without replacement, got {m}")
    rows, probs = [], []
    for c in itertools.product(range(m + 1), repeat=4):
        if sum(c) != m or (not replacement and max(c) > copies):
            continue
        if replacement:
            p = math.factorial(m) / math.prod(math.factorial(k) for k in c) / 4**m
        else:
            p = math.prod(math.comb(copies, k) for k in c) / math.comb(4 * copies, m)
        rows.append(c)
        probs.append(p)
    return torch.tensor(rows, dtype=torch.float64), torch.tensor(probs, dtype=torch.float64)


def expected_grad_norm(
    problem: ValleyProblem, x: Tensor, m: int, *, replacement: bool = True
) -> Tensor:
    r""":math:`\mathbb E\|g_I(x)\|` over micro-batches :math:`I` of size ``m``, exactly, by enumerating
    the kind counts (:func:`kind_count_law`); differentiable in ``x``. Shape ``x.shape[:-1]``.

    Book: chapter 4, "A valley of minima where only the noise changes".

    The normalised family's regulariser is :math:`\rho` times this (paper Theorems 3.6-3.8); it is an
    independent route to what :func:`sam_tutorial.theory.sde.implicit_regularizer` computes by
    enumerating index sets.
    """
    counts, probs = kind_count_law(m, replacement=replacement, copies=problem.copies)
    weights = (counts / m).to(x)  # [K, 4]
    g = problem.kind_grads(x)  # [..., 4, 2]
    micro = torch.einsum("kj,...jd->...kd", weights, g)  # [..., K, 2]
    return torch.linalg.vector_norm(micro, dim=-1) @ probs.to(x)


def usam_rate(rho: float, m: int, *, kappa: float = 1.0, n: int = 4, replacement: bool = True) -> float:
    r"""The rate :math:`\rho\,c_m\kappa^2` at which the m-USAM drift shrinks :math:`u` on the floor.

    Book: chapter 4, "A valley of minima where only the noise changes".

    >>> usam_rate(0.1, 2)
    0.05
    """
    return rho * batch_noise_coefficient(n, m, replacement=replacement) * kappa**2


def predicted_u(
    problem: ValleyProblem,
    variant: str,
    *,
    u0: float,
    rho: float,
    m: int | None,
    times: Tensor,
    replacement: bool = True,
    substeps: int = 8,
) -> Tensor:
    r"""The SDE's prediction of :math:`\mathbb E\,u_t` on the valley floor (:math:`v=0`).

    Book: chapter 4, "A valley of minima where only the noise changes".

    ``sgd``/``n-usam``/``n-sam``: :math:`u_0` (no drift along the valley). ``usam``/``m-usam``:
    :math:`u_0e^{-\rho c_m\kappa^2t}`. ``sam``/``m-sam``: the ODE :math:`\dot u=-\rho\,\partial_u
    \mathbb E\|g_I\|(u,0)` integrated by RK4 with ``substeps`` steps between consecutive ``times``
    (increasing, starting at 0). ``m`` is the size of the set that builds the perturbation.

    Raises:
        ValueError: for an unknown variant.
    """
    _, scope, normalize = parse_variant(variant)
    times = times.to(torch.float64)
    if scope in ("none", "full") or rho == 0:
        return torch.full_like(times, u0)
    assert m is not None
    if not normalize:
        rate = usam_rate(rho, m, kappa=problem.kappa, n=problem.n, replacement=replacement)
        return u0 * torch.exp(-rate * times)

    def velocity(u: float) -> float:
        z = torch.tensor([u, 0.0], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(expected_grad_norm(problem, z, m, replacement=replacement), z)
        return -rho * float(g[0])

    out, u = [u0], u0
    for t0, t1 in zip(times[:-1].tolist(), times[1:].tolist(), strict=True):
        h = (t1 - t0) / substeps
        for _ in range(substeps):
            k1 = velocity(u)
            k2 = velocity(u + 0.5 * h * k1)
            k3 = velocity(u + 0.5 * h * k2)
            k4 = velocity(u + h * k3)
            u += h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(u)
    return torch.tensor(out, dtype=torch.float64)


def simulate(
    problem: ValleyProblem,
    x0: Tensor,
    variant: str,
    *,
    eta: float,
    rho: float,
    b: int,
    m: int | None = None,
    n_steps: int,
    n_paths: int = 1,
    replacement: bool = True,
    seed: int = 0,
    record_every: int = 1,
) -> Tensor:
    r"""``n_paths`` runs of a SAM variant on the valley, with closed-form gradients.

    Book: chapter 4, "A valley of minima where only the noise changes".

    The same recursion and the same batches as
    :func:`sam_tutorial.theory.recursions.discrete_trajectory` (it draws them with
    :func:`~sam_tutorial.sgn.monte_carlo.sample_batches` from a generator seeded with ``seed``), about
    ten times faster.

    Returns:
        ``[n_steps // record_every + 1, n_paths, 2]`` (the start included).

    Raises:
        ValueError: as :func:`~sam_tutorial.theory.recursions.discrete_trajectory` (the same checks),
            or for ``record_every < 1``.
    """
    v, _, size = _variant_sizes(problem, x0, variant, b, m, replacement, "x0")
    scope, normalize = v.scope, v.normalize
    _check_run(eta, rho, n_steps, n_paths)
    check_int("record_every", record_every)
    gen = torch.Generator().manual_seed(check_seed("seed", seed))
    x = _start(x0, n_paths)
    out = [x]
    for k in range(n_steps):
        index = sample_batches(problem.n, b, n_paths, replacement=replacement, generator=gen)
        onehot = torch.nn.functional.one_hot(index % 4, 4).to(x.dtype)  # [P, b, 4]
        g = problem.kind_grads(x)  # [P, 4, 2]
        if scope == "none" or rho == 0:
            d = torch.einsum("pbk,pkd->pd", onehot, g) / b
        else:
            if scope == "full":
                w = onehot.sum(1, keepdim=True) / b  # descent weights [P, 1, 4]
                e = g.mean(1, keepdim=True)  # grad f (the kinds are balanced)
            else:
                w = onehot.reshape(n_paths, b // size, size, 4).sum(2) / size  # [P, J, 4]
                e = torch.einsum("pjk,pkd->pjd", w, g)
            if normalize:
                e = e / e.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
            gp = problem.kind_grads(x[:, None, :] + rho * e)  # [P, J, 4, 2]
            d = torch.einsum("pjk,pjkd->pd", w, gp) / w.shape[1]
        x = x - eta * d
        if (k + 1) % record_every == 0:
            out.append(x)
    return torch.stack(out)
