r"""Linear stability of GD, USAM and SAM at a quadratic minimum, and the geometry of the sharp/flat
landscape (:class:`~sam_tutorial.theory.problems.SharpFlatProblem`) that chapter 1 uses to predict
when each leaves the sharp basin.

On :math:`f=\frac\lambda2\|x-a\|^2` (full batch, plain SGD base with learning rate :math:`\eta`):

* GD, :math:`x-a\leftarrow(1-\eta\lambda)(x-a)`: stable iff :math:`\eta\lambda<2`;
* USAM, :math:`x-a\leftarrow(1-\eta\lambda-\eta\rho\lambda^2)(x-a)`: stable iff
  :math:`\rho<\rho_U=(2/\eta-\lambda)/\lambda^2` (:func:`usam_critical_rho`);
* SAM never converges to :math:`a`: for :math:`\eta\lambda<2` it settles on a 2-cycle
  :math:`\pm A\,u` with :math:`A=\eta\lambda\rho/(2-\eta\lambda)` (:func:`sam_cycle_amplitude`).

These are the book's own derivations (chapter 1, "SAM on a quadratic").

>>> round(usam_critical_rho(0.1, 10.0), 6), round(sam_cycle_amplitude(0.1, 10.0, 0.1), 6)
(0.1, 0.1)
"""

from __future__ import annotations

import math

from torch import Tensor

from sam_tutorial.config import check_nonneg
from sam_tutorial.theory.problems import SharpFlatProblem

__all__ = [
    "in_flat_basin",
    "sam_cycle_amplitude",
    "sam_escape_rho",
    "sharp_basin_radius",
    "usam_critical_rho",
]


def in_flat_basin(problem: SharpFlatProblem, x: Tensor) -> Tensor:
    r"""Whether ``x [..., 2]`` lies in the flat basin: where the flat quadratic term of the soft
    minimum is the smaller one, :math:`\lambda_f\|x-b\|^2<\lambda_s\|x-a\|^2` (the per-sample offsets
    add the same constant to both sides, since :math:`\lambda_s\sigma_s^2=\lambda_f\sigma_f^2`).

    Book: chapter 1, "Why they leave: a stability argument".
    """
    sharp = problem.sharp_curvature * (x - problem.sharp_centre).square().sum(-1)
    flat = problem.flat_curvature * (x - problem.flat_centre).square().sum(-1)
    return flat < sharp


def sharp_basin_radius(problem: SharpFlatProblem) -> float:
    r"""Distance from the sharp minimum to the basin boundary on the segment towards the flat one:
    :math:`\text{sep}\cdot\sqrt{\lambda_f}/(\sqrt{\lambda_s}+\sqrt{\lambda_f})`.

    Book: chapter 1, "Why they leave: a stability argument".
    """
    sep = float((problem.flat_centre - problem.sharp_centre).norm())
    s, f = math.sqrt(problem.sharp_curvature), math.sqrt(problem.flat_curvature)
    return sep * f / (s + f)


def usam_critical_rho(eta: float, curvature: float) -> float:
    r""":math:`\rho_U=(2/\eta-\lambda)/\lambda^2`: full-batch USAM is linearly stable at a quadratic
    minimum of curvature :math:`\lambda` iff :math:`\rho<\rho_U` (negative: GD itself is unstable).

    Book: chapter 1, "Why they leave: a stability argument".
    """
    if not eta > 0 or not curvature > 0:
        raise ValueError(f"eta and curvature must be > 0, got {eta!r}, {curvature!r}")
    return (2.0 / eta - curvature) / curvature**2


def sam_cycle_amplitude(eta: float, curvature: float, rho: float) -> float:
    r""":math:`A=\eta\lambda\rho/(2-\eta\lambda)`, the amplitude of the 2-cycle :math:`\pm A u` on which
    full-batch SAM settles around a quadratic minimum (requires :math:`0<\eta\lambda<2`).

    Book: chapter 1, "Why they leave: a stability argument".
    """
    if not 0 < eta * curvature < 2:
        raise ValueError(f"need 0 < eta * curvature < 2, got {eta * curvature!r}")
    check_nonneg("rho", rho)
    return eta * curvature * rho / (2.0 - eta * curvature)


def sam_escape_rho(eta: float, problem: SharpFlatProblem) -> float:
    r"""The radius at which SAM's 2-cycle around the sharp minimum reaches the basin boundary towards
    the flat minimum: :math:`A(\rho)=r` with :math:`r` from :func:`sharp_basin_radius`, i.e.
    :math:`\rho=r(2-\eta\lambda_s)/(\eta\lambda_s)`.

    Book: chapter 1, "Why they leave: a stability argument".
    """
    lam = problem.sharp_curvature
    return sharp_basin_radius(problem) / sam_cycle_amplitude(eta, lam, 1.0)
