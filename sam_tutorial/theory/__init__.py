r"""The theory made computable: toy problems with closed forms, the exact discrete recursion of each
SAM variant, the extended SDE (drifts, diffusions, Euler–Maruyama, weak error; paper §4), linear
stability at a quadratic minimum, the diagonal linear network of Andriushchenko & Flammarion, and the
toy problems of chapters 4 and 5 (a noisy valley, an interpolating contrast, RW-SAM's drift).

A *problem* is a callable ``problem(x) -> per-sample losses [..., n]`` built from plain tensor
operations, so it composes with ``torch.func``.

================= =============================================================
module            what it holds
================= =============================================================
``problems``      per-sample quadratics, logistic regression, the sharp/flat 2-D landscape
``recursions``    the discrete update of every variant, its exact expectation, trajectories
``sde``           drift (C3, C4), diffusion, implicit regularisers, Euler–Maruyama, weak error (C5)
``stability``     linear-stability thresholds of GD / USAM / SAM; basins of the 2-D landscape
``diagonal_net``  the sparse-regression diagonal linear network (C7)
``diagonal_msam`` m-SAM on that network for every m and a grid of radii at once (C7)
``valley``        a valley of minima along which only the noise changes (chapter 4)
``zero_loss``     the interpolating contrast: every per-sample loss can reach zero (chapter 4)
``rwsam_drift``   RW-(U)SAM's mean update and first-order drift, batches enumerated (chapter 5)
================= =============================================================
"""

from sam_tutorial.theory.problems import make_quadratic_problem, make_sharp_flat_problem
from sam_tutorial.theory.recursions import VARIANTS, discrete_trajectory, expected_update
from sam_tutorial.theory.sde import drift, euler_maruyama, implicit_regularizer, weak_error

__all__ = [
    "VARIANTS",
    "discrete_trajectory",
    "drift",
    "euler_maruyama",
    "expected_update",
    "implicit_regularizer",
    "make_quadratic_problem",
    "make_sharp_flat_problem",
    "weak_error",
]
