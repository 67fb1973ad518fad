"""The toy versions of the chapters' checks (the scoreboard's C1-C9 rows): each can pass and fail."""

from __future__ import annotations

import math

import pytest

from sam_tutorial.reproduction import toy_checks as tc


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (tc.c1_second_moment, {"num_batches": 400}),
        (tc.c2_monotone_norm, {"num_batches": 300}),
        (tc.c34_drift_order, {"family": "usam"}),
        (tc.c34_drift_order, {"family": "sam"}),
        (tc.c6_usam_valley, {"n_paths": 100, "horizon": 2.5}),
        (tc.c7_diagonal_net, {"n_iters": 500, "rhos": (0.2, 0.4)}),
        (tc.c8_gibbs_weights, {}),
        (tc.c9_square_probe, {"n_probes": 4000}),
        (tc.c9_abs_probe, {"n_probes": 200}),
    ],
)
def test_checks_pass(fn, kwargs) -> None:
    check = fn(**kwargs)
    assert check.passed, check.measured
    numbers = [
        x
        for v in check.values.values()
        for x in (v if isinstance(v, list | tuple) else [v])
        if isinstance(x, int | float) and not isinstance(x, bool)
    ]
    assert numbers and all(math.isfinite(x) for x in numbers), check.values  # it measured something finite


def test_c9_ratio_matches_its_closed_form() -> None:
    check = tc.c9_square_probe(n_probes=4000)
    assert check.values["ratio"] == pytest.approx(check.values["predicted_ratio"], rel=0.1)


@pytest.mark.slow
def test_c5_order_test_passes_for_the_sde_and_fails_for_its_noiseless_control() -> None:
    sde = tc.c5_weak_order(n_paths=1500)
    ode = tc.c5_weak_order(n_paths=1500, model="ode")
    assert sde.passed and sde.values["orders"]["model"] > sde.values["orders"]["ode"]
    assert ode.passed is False and ode.values["gap"] == 0.0  # the ODE is not a test of the SDE


def test_c5_rho_half_says_underpowered_where_it_cannot_resolve_the_order() -> None:
    check = tc.c5_rho_half(rhos=(0.4, 0.8), n_paths=300)
    assert check.passed is None and "not resolved" in check.measured


@pytest.mark.slow
def test_normalised_valley_reports_chapter_4s_iso_penalty_failure() -> None:
    # chapter 4's sizes: the ratios it reports (0.61 at m = 1, 1.13 at m = 2) come out of this computation
    check = tc.c6_normalised_valley()
    assert check.passed is False and not check.values["ordered"]
    assert check.values["ratios"][1] == pytest.approx(0.61, abs=0.02)
    assert check.values["ratios"][2] == pytest.approx(1.13, abs=0.02)
