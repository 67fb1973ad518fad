r"""Toy problems with closed forms: per-sample quadratics, logistic regression, the diagonal linear
network of Andriushchenko & Flammarion, and a 2-D landscape with a sharp and a flat minimum.

A *problem* is a callable ``problem(x) -> per-sample losses``: ``x`` has shape ``[..., d]`` and the
result ``[..., n]``, built from plain tensor operations so that it composes with
:func:`torch.func.grad`, ``jacrev`` and ``vmap``. :mod:`sam_tutorial.theory.sde` and
:mod:`sam_tutorial.theory.recursions` take any such callable.

>>> p = make_quadratic_problem(n=4, dim=2, seed=0)
>>> p(torch.zeros(2)).shape, p(torch.zeros(5, 2)).shape
(torch.Size([4]), torch.Size([5, 4]))
"""


from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.functional import softplus

from sam_tutorial.config import check_int, check_nonneg, check_seed

__all__ = [
    "LogisticProblem",
    "QuadraticProblem",
    "SharpFlatProblem",
    "logistic_data",
    "make_quadratic_problem",
    "make_sharp_flat_problem",
]


class QuadraticProblem:
    r"""Per-sample quadratics :math:`f_i(x)=\frac12(x-c_i)^\top A_i(x-c_i)`.

    Book: chapter 3, "SGD's stochastic modified equation".

    With different :math:`A_i` the per-sample gradients :math:`A_i(x-c_i)` spread differently at
    different :math:`x`, so :math:`\operatorname{tr}V` depends on :math:`x` (paper §7, claim C5).

    Args:
        curvatures: ``[n, d, d]`` symmetric matrices :math:`A_i`.
        centres: ``[n, d]`` points :math:`c_i`.

    Raises:
        ValueError: if the shapes do not match.
    """

    def __init__(self, curvatures: Tensor, centres: Tensor) -> None:
        if curvatures.dim() != 3 or curvatures.shape[1] != curvatures.shape[2]:
            raise ValueError(f"curvatures must be [n, d, d], got {tuple(curvatures.shape)}")
        if centres.shape != curvatures.shape[:2]:
            raise ValueError(
                f"centres must be [n, d] = {list(curvatures.shape[:2])}, got {tuple(centres.shape)}"
            )
        self.curvatures = 0.5 * (curvatures + curvatures.transpose(1, 2))
        self.centres = centres
        self.n, self.dim = centres.shape

    def __call__(self, x: Tensor) -> Tensor:
        diff = x.unsqueeze(-2) - self.centres
        return 0.5 * torch.einsum("...ni,nij,...nj->...n", diff, self.curvatures, diff)

    def grads(self, x: Tensor) -> Tensor:
        r"""Per-sample gradients :math:`A_i(x-c_i)`, shape ``[..., n, d]``."""
        return torch.einsum("nij,...nj->...ni", self.curvatures, x.unsqueeze(-2) - self.centres)

    def hessian(self) -> Tensor:
        r"""The Hessian of :math:`f`, :math:`\frac1n\sum_i A_i` (constant)."""
        return self.curvatures.mean(0)

    def minimizer(self) -> Tensor:
        r"""The minimiser of :math:`f`: :math:`(\sum_i A_i)^{-1}\sum_i A_ic_i`."""
        rhs = torch.einsum("nij,nj->i", self.curvatures, self.centres)
        return torch.linalg.solve(self.curvatures.sum(0), rhs)

    def trace_V(self, x: Tensor) -> Tensor:
        r""":math:`\operatorname{tr}V(x)=\frac1n\sum_i\|A_i(x-c_i)-\nabla f(x)\|^2`, shape ``[...]``."""
        g = self.grads(x)
        return (g - g.mean(-2, keepdim=True)).square().sum(-1).mean(-1)


def make_quadratic_problem(
    n: int = 8,
    dim: int = 2,
    *,
    seed: int = 0,
    spread: float = 1.0,
    curvature_range: tuple[float, float] = (0.5, 2.0),
    dtype: torch.dtype = torch.float64,
) -> QuadraticProblem:
    """Random per-sample quadratics: eigenvalues of each :math:`A_i` uniform in ``curvature_range``,
    random eigenvectors, centres :math:`c_i\\sim N(0,\\text{spread}^2 I)`.

    Book: chapter 3, "SGD's stochastic modified equation".

    Args:
        n: number of samples.
        dim: dimension :math:`d`.
        seed: seed of a private CPU generator.
        spread: scale of the centres.
        curvature_range: ``(low, high)`` with ``0 <= low <= high``.
        dtype: dtype of the problem.

    Raises:
        ValueError: for ``n < 1``, ``dim < 1`` or a bad ``curvature_range``.

    >>> p = make_quadratic_problem(n=3, dim=2)
    >>> p.curvatures.shape, p.centres.shape
    (torch.Size([3, 2, 2]), torch.Size([3, 2]))
    """
    n, dim = check_int("n", n), check_int("dim", dim)
    if not isinstance(curvature_range, tuple | list) or len(curvature_range) != 2:
        raise ValueError(f"curvature_range must be a pair (low, high) with 0 <= low <= high, got "
                         f"{curvature_range!r}")
    low, high = curvature_range
    if not 0 <= low <= high or not math.isfinite(high):
        raise ValueError(f"curvature_range must satisfy 0 <= low <= high (finite), got {curvature_range!r}")
    check_nonneg("spread", spread)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype (e.g. torch.float64), got {dtype!r}")
    gen = torch.Generator().manual_seed(check_seed("seed", seed))
    q, _ = torch.linalg.qr(torch.randn(n, dim, dim, generator=gen, dtype=torch.float64))
    lam = low + (high - low) * torch.rand(n, dim, generator=gen, dtype=torch.float64)
    curv = q @ torch.diag_embed(lam) @ q.transpose(1, 2)
    centres = spread * torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return QuadraticProblem(curv.to(dtype), centres.to(dtype))


class LogisticProblem:
    r"""Logistic regression: :math:`f_i(w)=\log(1+e^{-y_ix_i^\top w})+\frac{\lambda}{2}\|w\|^2`,
    labels :math:`y_i\in\{-1,+1\}`.

    Book: chapter 3, "Euler–Maruyama paths against the discrete algorithm (C5)".

    Args:
        features: ``[n, d]``.
        labels: ``[n]`` with values in ``{-1, +1}``.
        l2: ridge coefficient :math:`\lambda\ge0` (added to every sample).

    Raises:
        ValueError: for mismatched shapes, labels outside ``{-1, +1}`` or ``l2 < 0``.
    """

    def __init__(self, features: Tensor, labels: Tensor, l2: float = 0.0) -> None:
        if features.dim() != 2 or labels.shape != features.shape[:1]:
            raise ValueError(
                f"features must be [n, d] and labels [n]; got {tuple(features.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if not bool(((labels == 1) | (labels == -1)).all()):
            raise ValueError("labels must be -1 or +1")
        check_nonneg("l2", l2)
        self.features, self.labels, self.l2 = features, labels.to(features.dtype), float(l2)
        self.n, self.dim = features.shape

    def __call__(self, w: Tensor) -> Tensor:
        margins = self.labels * (w @ self.features.T)
        ridge = 0.5 * self.l2 * w.square().sum(-1, keepdim=True)
        return softplus(-margins) + ridge

    def minimizer(self, *, steps: int = 50, tol: float = 1e-12) -> Tensor:
        r"""The minimiser of :math:`f=\frac1n\sum_if_i` by Newton's method from :math:`w=0` (closed-form
        gradient and Hessian). Unlike the quadratics' the problem is not quadratic, so the SDE's
        :math:`O(\rho^2)` drift remainder is present (chapter 3's :math:`\rho` sweep).

        Raises:
            ValueError: if Newton's method does not converge (separable data with ``l2 = 0`` has no
                minimiser).

        >>> p = LogisticProblem(*logistic_data(8, 2, seed=3, label_noise=0.2), l2=0.05)
        >>> w = p.minimizer()
        >>> float(torch.func.grad(lambda z: p(z).mean())(w).norm()) < 1e-10
        True
        """
        w = torch.zeros(self.dim, dtype=self.features.dtype)
        for _ in range(steps):
            s = torch.sigmoid(-self.labels * (self.features @ w))          # [n]
            g = -(s * self.labels) @ self.features / self.n + self.l2 * w
            h = (self.features.T * (s * (1 - s))) @ self.features / self.n
            h = h + self.l2 * torch.eye(self.dim, dtype=w.dtype)
            step = torch.linalg.solve(h, g)
            w = w - step
            if not bool(torch.isfinite(w).all()):
                break
            if float(step.norm()) < tol:
                return w
        raise ValueError("Newton's method did not converge: the data may be separable; use l2 > 0")


def logistic_data(
    n: int = 32,
    dim: int = 4,
    *,
    seed: int = 0,
    label_noise: float = 0.1,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Gaussian features and labels from a random linear teacher, with a fraction of labels flipped.

    Book: chapter 3, "Euler–Maruyama paths against the discrete algorithm (C5)".

    Args:
        n: number of samples.
        dim: feature dimension.
        seed: seed of a private CPU generator.
        label_noise: probability of flipping each label, in ``[0, 1]``.
        dtype: dtype of the features.

    Returns:
        ``(features [n, dim], labels [n])`` with labels in ``{-1, +1}``.

    Raises:
        ValueError: for ``n < 1``, ``dim < 1`` or ``label_noise`` outside ``[0, 1]``.

    >>> x, y = logistic_data(6, 3)
    >>> x.shape, sorted(set(y.tolist())) <= [-1.0, 1.0]
    (torch.Size([6, 3]), True)
    """
    n, dim = check_int("n", n), check_int("dim", dim)
    if check_nonneg("label_noise", label_noise) > 1:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise!r}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    teacher = torch.randn(dim, generator=gen, dtype=torch.float64)
    y = torch.sign(x @ teacher + 1e-12)
    flip = torch.rand(n, generator=gen, dtype=torch.float64) < label_noise
    y = torch.where(flip, -y, y)
    return x.to(dtype), y.to(dtype)


class SharpFlatProblem:
    r"""A 2-D landscape with a sharp and a flat minimum of (nearly) equal loss.

    Book: chapter 1, "A landscape with a sharp and a flat minimum".

    Per-sample losses are soft minima of two isotropic quadratic basins,

    .. math::

        f_i(x)=-\log\Big(e^{-\frac{\lambda_s}2\|x-a-\sigma_s z_i\|^2}
        +e^{-\frac{\lambda_f}2\|x-b-\sigma_f z_i\|^2}\Big),

    with centred offsets :math:`z_i` and :math:`\lambda_s\sigma_s^2=\lambda_f\sigma_f^2`, so both
    minima have the same loss (up to :math:`e^{-\text{barrier}}` terms) but
    :math:`\operatorname{tr}V\approx\lambda^2\sigma^2\overline{\|z\|^2}` is :math:`\lambda_s/\lambda_f`
    times larger in the sharp basin, as is the Hessian. Build with :func:`make_sharp_flat_problem`.

    Attributes:
        sharp_centre: :math:`a` ``[2]``.
        flat_centre: :math:`b` ``[2]``.
        sharp_offsets: :math:`\sigma_s z_i` ``[n, 2]``.
        flat_offsets: :math:`\sigma_f z_i` ``[n, 2]``.
        sharp_curvature: :math:`\lambda_s`.
        flat_curvature: :math:`\lambda_f`.
    """

    def __init__(
        self,
        sharp_centre: Tensor,
        flat_centre: Tensor,
        sharp_offsets: Tensor,
        flat_offsets: Tensor,
        sharp_curvature: float,
        flat_curvature: float,
    ) -> None:
        self.sharp_centre, self.flat_centre = sharp_centre, flat_centre
        self.sharp_offsets, self.flat_offsets = sharp_offsets, flat_offsets
        self.sharp_curvature, self.flat_curvature = float(sharp_curvature), float(flat_curvature)
        self.n, self.dim = sharp_offsets.shape

    def __call__(self, x: Tensor) -> Tensor:
        x = x.unsqueeze(-2)
        qs = 0.5 * self.sharp_curvature * (x - self.sharp_centre - self.sharp_offsets).square().sum(-1)
        qf = 0.5 * self.flat_curvature * (x - self.flat_centre - self.flat_offsets).square().sum(-1)
        return -torch.logaddexp(-qs, -qf)


def make_sharp_flat_problem(
    n: int = 16,
    *,
    sharp_curvature: float = 16.0,
    flat_curvature: float = 1.0,
    flat_spread: float = 0.5,
    separation: float = 6.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> SharpFlatProblem:
    r"""A :class:`SharpFlatProblem` with the sharp basin at :math:`(-\text{sep}/2, 0)` and the flat
    one at :math:`(+\text{sep}/2, 0)`.

    Book: chapter 1, "A landscape with a sharp and a flat minimum".

    Args:
        n: number of samples.
        sharp_curvature: :math:`\lambda_s`.
        flat_curvature: :math:`\lambda_f`.
        flat_spread: :math:`\sigma_f`; :math:`\sigma_s=\sigma_f\sqrt{\lambda_f/\lambda_s}`.
        separation: distance between the basin centres.
        seed: seed of the offsets.
        dtype: dtype.

    Raises:
        ValueError: for ``n < 2`` or non-positive curvatures, spread or separation.

    >>> p = make_sharp_flat_problem()
    >>> a, b = p.sharp_centre, p.flat_centre
    >>> bool(torch.isclose(p(a).mean(), p(b).mean(), rtol=0.05))
    True
    """
    check_int("n", n, 2)
    for name, value in (
        ("sharp_curvature", sharp_curvature),
        ("flat_curvature", flat_curvature),
        ("flat_spread", flat_spread),
        ("separation", separation),
    ):
        check_nonneg(name, value, positive=True)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    z = z - z.mean(0)
    sharp_spread = flat_spread * math.sqrt(flat_curvature / sharp_curvature)
    a = torch.tensor([-separation / 2, 0.0], dtype=torch.float64)
    return SharpFlatProblem(
        a.to(dtype),
        (-a).to(dtype),
        (sharp_spread * z).to(dtype),
        (flat_spread * z).to(dtype),
        sharp_curvature,
        flat_curvature,
    )
