"""Chapter 5's catalogue entry: the arms it promises and their configurations."""

from __future__ import annotations

from sam_tutorial.engine.experiments import get_experiment


def test_rw_compare_arms_differ_only_in_what_they_compare() -> None:
    """A controlled comparison: every arm trains the same model on the same data with the same schedule;
    the RW-SAM arms cover both descent readings x both scores, each label saying which, at SAM's radius;
    and SGD is the same configuration with rho = 0."""
    exp = get_experiment("rw-compare")
    for mode in ("quick", "standard"):
        runs = {r.label: r for r in exp.runs(mode)}
        shared = {(r.data, r.model, tuple(sorted(r.model_options.items())), r.train.epochs,
                   r.train.batch_size, r.train.lr, r.train.schedule) for r in runs.values()}
        assert len(shared) == 1, shared
        rw = {k: v.train for k, v in runs.items() if v.train.optimizer == "rw-sam"}
        arms = {(cfg.options["weighted_descent"], cfg.options["score"]) for cfg in rw.values()}
        assert arms == {(w, s) for w in (False, True) for s in ("finite-difference", "exact")}
        for label, cfg in rw.items():
            assert ("weighted" in label) is cfg.options["weighted_descent"]
            assert label.endswith("exact") is (cfg.options["score"] == "exact")
            assert cfg.rho == runs["sam"].train.rho > 0 and cfg.lam is not None and cfg.lam > 0
        assert runs["sgd"].train.rho == 0 and runs["sam"].train.optimizer == "sam"
    assert len(exp.seeds["standard"]) >= 3
