"""Chapter 4's catalogue entry: its grid, its per-mode runs, and the best radii inside the grid."""

from __future__ import annotations

from sam_tutorial.engine.catalog.m_sharpness import BATCH, BEST_RHO, GRID, N_TRAIN, label
from sam_tutorial.engine.experiments import get_experiment


def test_registered_with_the_grid_in_paper_mode():
    exp = get_experiment("m-sharpness-cnn")
    assert exp.chapter == "04_m_sharpness"
    paper = {s.label: s for s in exp.runs("paper")}
    assert len(paper) == 1 + sum(len(r) for r in GRID.values())
    assert paper["sgd"].train.optimizer == "sgd"
    for m, rhos in GRID.items():
        assert m == N_TRAIN or BEST_RHO[m] in rhos
        for rho in rhos:
            spec = paper[label(m, rho)]
            assert spec.train.rho == rho and spec.tags == {"m": m, "rho": rho}
            kind = {BATCH: "sam", N_TRAIN: "n-sam"}.get(m, "m-sam")
            assert spec.train.optimizer == kind and (spec.train.m == m) == (kind == "m-sam")
            assert spec.data == paper["sgd"].data and spec.model == paper["sgd"].model  # only m, rho vary
            assert spec.model_options == paper["sgd"].model_options
            assert spec.data.n_train == N_TRAIN and BATCH < N_TRAIN  # n-SAM's "m = n" is the data set


def test_standard_mode_is_sgd_and_m8_at_its_best_radius_with_the_paper_configuration():
    exp = get_experiment("m-sharpness-cnn")
    standard = {s.label: s for s in exp.runs("standard")}
    paper = {s.label: s for s in exp.runs("paper")}
    assert set(standard) == {"sgd", label(8, BEST_RHO[8])}
    for name, spec in standard.items():
        assert spec == paper[name]  # the live check trains exactly the recorded configuration
    assert len(exp.runs("quick")) == 3
