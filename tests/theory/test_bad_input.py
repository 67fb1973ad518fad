"""Bad input (theory): toy problems, discrete recursions and the SDE refuse a start point of
another dimension or dtype, a list, out-of-range seeds and non-finite problem settings with a
``ValueError`` naming the argument, instead of torch's error from inside ``vmap``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from sam_tutorial.theory.problems import make_quadratic_problem
from sam_tutorial.theory.recursions import discrete_trajectory, expected_update
from sam_tutorial.theory.sde import diffusion_matrix, drift, euler_maruyama

P = make_quadratic_problem(n=4, dim=2)
X0 = P.minimizer()


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(spread=float("nan")), "spread must be a finite number >= 0, got nan"),
    (dict(curvature_range=(0.1, 1.0, 2.0)), r"curvature_range must be a pair \(low, high\)"),
    (dict(curvature_range=(0.5, float("inf"))), r"curvature_range must satisfy 0 <= low <= high \(finite\)"),
    (dict(dtype=torch.int64), r"dtype must be a floating-point torch.dtype \(e.g. torch.float64\)"),
    (dict(seed=-1), r"seed must be an integer in \[0, 2\*\*32\), got -1"),
])
def test_make_quadratic_problem_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_quadratic_problem(**kwargs)


RUNS: dict[str, Callable[..., object]] = {
    "discrete_trajectory": lambda x, **k: discrete_trajectory(P, x, "sam", eta=0.1, rho=0.1, b=2, n_steps=1,
                                                              **k),
    "euler_maruyama": lambda x, **k: euler_maruyama(P, x, "sam", eta=0.1, rho=0.1, b=2, n_steps=1, **k),
}
AT: dict[str, Callable[[Any], object]] = {
    "drift": lambda x: drift(P, x, "sam", rho=0.1, b=2),
    "expected_update": lambda x: expected_update(P, x, "sam", rho=0.1, b=2),
    "diffusion_matrix": lambda x: diffusion_matrix(P, x, b=2),
}


@pytest.mark.parametrize(("x", "message"), [
    (torch.zeros(3, dtype=torch.float64), r"of shape \(3,\) and dtype torch.float64 does not fit the"),
    (torch.zeros(2), "has dtype torch.float32 but the problem computes in torch.float64"),
    ([0.0, 0.0], r"must be a floating-point tensor \[d\] \(or \[n_paths, d\]\), got list"),
    (torch.zeros(2, dtype=torch.int64), r"must be a floating-point tensor \[d\] .*got torch.int64 \(2,\)"),
])
@pytest.mark.parametrize("name", [*RUNS, *AT])
def test_start_points_that_do_not_fit_the_problem(name: str, x: object, message: str) -> None:
    arg = "x0" if name in RUNS else "x"
    with pytest.raises(ValueError, match=f"{arg} {message}"):
        RUNS[name](x) if name in RUNS else AT[name](x)


@pytest.mark.parametrize("name", list(RUNS))
@pytest.mark.parametrize("seed", [-1, 2**32, "0"])
def test_trajectory_seeds_out_of_range(name: str, seed: object) -> None:
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        RUNS[name](X0, seed=seed)
