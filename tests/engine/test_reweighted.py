"""Chapter 5's catalogue entry: the arms it promises and their configurations."""

from __future__ import annotations

from sam_tutorial.engine.experiments import get_experiment


def test_rw_compare_arms() -> None:
    exp = get_experiment("rw-compare")
    assert exp.chapter == "05_reweighted_sam"
    for mode in ("quick", "standard"):
        runs = {r.label: r for r in exp.runs(mode)}
        rw = {k: v.train for k, v in runs.items() if k.startswith("rw-")}
        assert set(runs) == {"sgd", "sam", "rw-sam-uniform-fd", "rw-sam-uniform-exact", "rw-sam-weighted-fd",
                             "rw-sam-weighted-exact"}
        for label, cfg in rw.items():
            assert cfg.options["weighted_descent"] is ("weighted" in label)
            assert cfg.options["score"] == ("exact" if label.endswith("exact") else "finite-difference")
            assert cfg.rho == runs["sam"].train.rho > 0 and cfg.lam == 0.1
        assert {r.train.epochs for r in runs.values()} == {2 if mode == "quick" else 20}
    assert len(exp.seeds["standard"]) >= 3
