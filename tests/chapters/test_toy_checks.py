"""The toy versions of the chapters' checks pass at small sizes (the scoreboard's C1-C9 rows)."""

from __future__ import annotations

import pytest

from sam_tutorial.chapters import toy_checks as tc


def test_loglog_slope() -> None:
    assert tc.loglog_slope([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (tc.c1_second_moment, {"num_batches": 400}),
        (tc.c2_monotone_norm, {"num_batches": 300}),
        (tc.c34_drift_order, {"family": "usam"}),
        (tc.c34_drift_order, {"family": "sam"}),
        (tc.c6_valley_escape, {"n_paths": 100, "horizon": 2.5}),
        (tc.c7_diagonal_net, {"n_iters": 500, "rhos": (0.2, 0.4)}),
        (tc.c8_gibbs_weights, {}),
        (tc.c9_probe_variance, {"n_probes": 4000}),
    ],
)
def test_checks_pass(fn, kwargs) -> None:
    check = fn(**kwargs)
    assert check.passed, check.measured
    assert check.test and check.measured


def test_c9_ratio_matches_its_closed_form() -> None:
    check = tc.c9_probe_variance(n_probes=4000)
    assert check.values["ratio"] == pytest.approx(check.values["predicted_ratio"], rel=0.1)
