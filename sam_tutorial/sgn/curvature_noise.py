r"""Where the SGN term of the drift comes from: the covariance of per-sample Hessians and gradients.

For per-sample losses :math:`f_1,\dots,f_n` with gradients :math:`g_i=\nabla f_i`, Hessians
:math:`H_i=\nabla^2 f_i`, means :math:`\bar g=\nabla f` and :math:`\bar H=\nabla^2 f`, and
:math:`\operatorname{tr}V=\frac1n\sum_i\|g_i\|^2-\|\bar g\|^2`,

.. math::

    \tfrac12\nabla\operatorname{tr}V
    =\frac1n\sum_i H_ig_i-\bar H\bar g
    =\frac1n\sum_i (H_i-\bar H)(g_i-\bar g)
    =\operatorname{Cov}_i(H_i,\nabla f_i).

(Differentiate :math:`\frac12\|g_i\|^2` to get :math:`H_ig_i` and :math:`\frac12\|\bar g\|^2` to get
:math:`\bar H\bar g`; the last form expands to the same two terms.) The SGN term
:math:`\frac\rho2c_m\nabla\operatorname{tr}V` of the USAM-family drift is therefore
:math:`\rho\,c_m\operatorname{Cov}_i(H_i,\nabla f_i)`: it needs per-sample *curvatures* that vary
together with the per-sample *gradients*. Where every :math:`H_i` is the same matrix it vanishes,
however large the gradient noise is.

>>> import torch
>>> a, b = 2.0, 5.0   # f_1 = a/2 (x - 1)^2, f_2 = b/2 (x + 1)^2
>>> losses = lambda x: torch.stack([0.5 * a * (x[0] - 1) ** 2, 0.5 * b * (x[0] + 1) ** 2])
>>> x = torch.tensor([0.3], dtype=torch.float64)
>>> cov = hessian_gradient_covariance(losses, x)
>>> g1, g2 = a * (0.3 - 1), b * (0.3 + 1)
>>> bool(torch.isclose(cov[0], torch.tensor((a - b) * (g1 - g2) / 4, dtype=torch.float64)))
True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import grad, hessian, jacrev

from sam_tutorial.config import check_tensor
from sam_tutorial.sgn.variance import sgn_trace

__all__ = ["covariance_of_moments", "half_grad_trace_V", "hessian_gradient_covariance"]

LossesFn = Callable[[Tensor], Tensor]


def covariance_of_moments(grads: Tensor, hessians: Tensor) -> Tensor:
    r""":math:`\frac1n\sum_i(H_i-\bar H)(g_i-\bar g)` from stacked per-sample gradients ``[n, d]`` and
    Hessians ``[n, d, d]``.

    Book: chapter 3, "The drift of each variant, step by step"; paper: the tr V term of Thms. 3.3 and 3.5
    (claim C3).

    Raises:
        ValueError: if the shapes do not match.

    >>> g = torch.tensor([[1.0], [-1.0]]); h = torch.tensor([[[3.0]], [[1.0]]])
    >>> covariance_of_moments(g, h)
    tensor([1.])
    """
    check_tensor("grads", grads, floating=True, finite=True)
    check_tensor("hessians", hessians, floating=True, finite=True)
    if grads.dim() != 2 or hessians.shape != (*grads.shape, grads.shape[1]):
        raise ValueError(
            "grads must be [n, d] and hessians [n, d, d]; "
            f"got {tuple(grads.shape)} and {tuple(hessians.shape)}"
        )
    dh = hessians - hessians.mean(0)
    dg = grads - grads.mean(0)
    return torch.einsum("nij,nj->i", dh, dg) / grads.shape[0]


def hessian_gradient_covariance(losses: LossesFn, x: Tensor) -> Tensor:
    r""":math:`\operatorname{Cov}_i(H_i,\nabla f_i)` at ``x`` for a problem ``losses(x [d]) -> [n]``,
    from the per-sample gradients and Hessians (``torch.func``; meant for small :math:`d`).

    Book: chapter 3, "The drift of each variant, step by step"; paper: the tr V term of Thms. 3.3 and 3.5
    (claim C3).

    Args:
        losses: per-sample losses as a function of a point ``[d]``.
        x: the point ``[d]``.

    Returns:
        Tensor ``[d]``, equal to :math:`\frac12\nabla\operatorname{tr}V(x)`.
    """
    grads = jacrev(losses)(x)       # [n, d]
    hessians = hessian(losses)(x)   # [n, d, d]
    return covariance_of_moments(grads, hessians)


def half_grad_trace_V(losses: LossesFn, x: Tensor) -> Tensor:
    r""":math:`\frac12\nabla\operatorname{tr}V(x)` by differentiating :math:`\operatorname{tr}V` itself with
    autograd: the independent route to :func:`hessian_gradient_covariance`.

    Book: chapter 3, "The drift of each variant, step by step"; paper: the tr V term of Thms. 3.3 and 3.5
    (claim C3).

    >>> p = lambda x: torch.stack([x[0] ** 2, 3 * x[0] ** 2])
    >>> half_grad_trace_V(p, torch.tensor([1.0], dtype=torch.float64))
    tensor([4.], dtype=torch.float64)
    """
    return 0.5 * grad(lambda z: sgn_trace(jacrev(losses)(z)))(x)
