"""Chapter 5's experiments (Reweighted SAM, book chapter 5) on MNIST-1D with the MLP 40-256-256-10.

SGD with momentum 0.9, weight decay 5e-4, cosine learning rate from 0.05, batch 128, 20 epochs (the
:class:`~sam_tutorial.engine.train_config.TrainConfig` defaults); every run logs, per epoch, the step
metrics of :data:`sam_tutorial.engine.measure.STEP_METRICS` (RW-SAM's effective batch 1/Σp², the weight on
mislabelled samples, ‖ε‖). RW-SAM's scores are named by :data:`SCORE_LABELS`: ``fd`` the paper's finite
difference (probe radius :data:`RW_DELTA`), ``exact`` the exact directional derivative ``|zᵀ∇f_i|`` by
forward-mode AD, ``norm`` the exact per-sample gradient norms √(2/π)‖∇f_i‖ (a diagnostic beyond the
paper).

* ``rw-compare``: SGD, SAM and RW-SAM {uniform, weighted descent} x {fd, exact}, all at ρ = 0.05 and
  λ = 0.1: test accuracy, tr V at the solution, seconds per epoch. The part of the chapter's comparison a
  book build can afford.
* ``rw-study-compare``, ``rw-study-lambda``, ``rw-study-noise``: the chapter's recorded study (about 40
  minutes on one CPU core in ``paper`` mode, seeds 0-2; ``results/rw-study-*-paper.json``, written by
  ``sam-tutorial run NAME --mode paper`` and ``python -m sam_tutorial.engine.recorded``). ``compare``:
  SGD; SAM, m-SAM (m = 32, 8) and RW-SAM {uniform, weighted} x {fd, norm} for ρ in {0.05, 0.1, 0.2},
  plus the exact score at ρ = 0.05; tr V and tr H on the first 1000 training samples at the end.
  ``lambda``: RW-SAM at ρ = 0.05 for λ in {0.3, 1, 3, 10} (λ = 0.1 is in ``compare``). ``noise``: 20, 40
  and 60 % symmetric label noise; SGD, SAM, m-SAM (m = 8), RW-SAM. ``standard`` mode is ``paper`` mode;
  ``quick`` mode a pipeline check (1000 / 500 samples, 2 epochs, one seed, fewer arms).
"""

from __future__ import annotations

from typing import Any

from sam_tutorial.engine.catalog.registry import register
from sam_tutorial.engine.runs import DataSpec, Experiment, RunSpec
from sam_tutorial.engine.train_config import TrainConfig

__all__ = ["MLP", "RW_DELTA", "RW_LAM", "RW_RHO", "SCORE_LABELS", "STUDY_LAMBDAS", "STUDY_NOISE",
           "STUDY_RHOS", "rw_label"]

RW_RHO = 0.05
RW_LAM = 0.1
RW_DELTA = 0.01
"""The probe radius ‖δu‖ of RW-SAM's finite difference (the paper's δ and probe scaling are UNCONFIRMED)."""

MLP = {"hidden": (256, 256)}
"""The chapter's MLP 40-256-256-10."""

SCORE_LABELS = {"finite-difference": "fd", "exact": "exact", "norm": "norm"}
"""RW-SAM's ``score`` option -> the short name in run labels."""

STUDY_RHOS = (0.05, 0.1, 0.2)
STUDY_LAMBDAS = (0.3, 1.0, 3.0, 10.0)
STUDY_NOISE = (0.2, 0.4, 0.6)
STUDY_SEEDS = {"quick": (0,), "standard": (0, 1, 2), "paper": (0, 1, 2)}


def rw_label(descent: str, score: str) -> str:
    """``rw-sam-{uniform|weighted}-{fd|exact|norm}``, the name of an RW-SAM arm.

    >>> rw_label("weighted", "norm")
    'rw-sam-weighted-norm'
    """
    return f"rw-sam-{descent}-{SCORE_LABELS[score]}"


def _rw(rho: float, lam: float, descent: str, score: str) -> dict[str, Any]:
    return dict(optimizer="rw-sam", rho=rho, lam=lam, delta=RW_DELTA,
                options={"weighted_descent": descent == "weighted", "score": score})


def _data(quick: bool, noise: float = 0.0) -> DataSpec:
    n_train, n_test = (1000, 500) if quick else (None, None)
    return DataSpec("mnist1d", n_train, n_test, label_noise=noise)


def _run(label: str, arm: str, kw: dict[str, Any], quick: bool, metrics: tuple[str, ...],
         noise: float = 0.0, **tags: Any) -> RunSpec:
    config = TrainConfig(**kw, epochs=2 if quick else 20, batch_size=128, metrics=metrics)
    all_tags = {"arm": arm, "rho": kw.get("rho", 0.0), **({"noise": noise} if noise else {}), **tags}
    return RunSpec(label, _data(quick, noise), "mlp", config, MLP, None, all_tags)


def _compare(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    data = DataSpec("mnist1d", 1000, 500) if quick else DataSpec("mnist1d")
    base: dict[str, Any] = dict(epochs=2 if quick else 20, batch_size=128, metrics=("trace_V",))
    rw: dict[str, Any] = dict(optimizer="rw-sam", rho=RW_RHO, lam=RW_LAM, delta=RW_DELTA)
    arms: dict[str, dict[str, Any]] = {"sgd": dict(optimizer="sgd"), "sam": dict(optimizer="sam", rho=RW_RHO)}
    for descent in ("uniform", "weighted"):
        for score in ("finite-difference", "exact"):
            options = {"weighted_descent": descent == "weighted", "score": score}
            arms[rw_label(descent, score)] = dict(rw, options=options)
    runs = []
    for label, kw in arms.items():
        tags = {"optimizer": kw["optimizer"], **dict(kw.get("options", {}))}
        runs.append(RunSpec(label, data, "mlp", TrainConfig(**kw, **base), MLP, None, tags))
    return runs


register(Experiment(
    "rw-compare",
    "SGD, SAM, RW-SAM {uniform, weighted descent} x {finite-difference, exact score}: accuracy, tr V, time",
    _compare, {"quick": (0,), "standard": (0, 1, 2), "paper": (0, 1, 2)}, chapter="05_reweighted_sam",
    notes="Standard mode: MNIST-1D, MLP 40-256-256-10, batch 128, 20 epochs, rho 0.05 for every arm; "
          f"RW-SAM lambda {RW_LAM}; delta {RW_DELTA} (the radius of a ±1 Rademacher probe) for the "
          "finite-difference score, score='exact' for the forward-mode one. The paper's descent pass "
          "(uniform or weighted), lambda and delta are UNCONFIRMED. tr V on the first 1000 training "
          "samples after the last epoch.",
))


def _study_arms(rho: float, m_values: tuple[int, ...], scores: tuple[str, ...],
                descents: tuple[str, ...] = ("uniform", "weighted")) -> dict[str, dict[str, Any]]:
    arms: dict[str, dict[str, Any]] = {"sam": dict(optimizer="sam", rho=rho)}
    arms.update({f"m-sam-m{m}": dict(optimizer="m-sam", rho=rho, m=m) for m in m_values})
    for descent in descents:
        for score in scores:
            arms[rw_label(descent, score)] = _rw(rho, RW_LAM, descent, score)
    return arms


def _study_compare(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    metrics = ("trace_V", "trace_H")
    runs = [_run("sgd", "sgd", dict(optimizer="sgd"), quick, metrics)]
    for rho in (STUDY_RHOS[:1] if quick else STUDY_RHOS):
        arms = _study_arms(rho, (32,) if quick else (32, 8), ("finite-difference", "norm"))
        runs += [_run(f"{arm}-rho{rho:g}", arm, kw, quick, metrics) for arm, kw in arms.items()]
    for descent in ("uniform", "weighted"):
        arm = rw_label(descent, "exact")
        runs.append(_run(f"{arm}-rho{RW_RHO:g}", arm, _rw(RW_RHO, RW_LAM, descent, "exact"), quick, metrics))
    return runs


def _study_lambda(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    runs = []
    for score in ("finite-difference", "norm"):
        for descent in ("uniform", "weighted"):
            arm = rw_label(descent, score)
            for lam in (STUDY_LAMBDAS[:1] if quick else STUDY_LAMBDAS):
                runs.append(_run(f"{arm}-lam{lam:g}", arm, _rw(RW_RHO, lam, descent, score), quick,
                                 ("trace_V", "trace_H"), lam=lam))
    return runs


def _study_noise(mode: str) -> list[RunSpec]:
    quick = mode == "quick"
    arms: dict[str, dict[str, Any]] = {"sgd": dict(optimizer="sgd"), "sam": dict(optimizer="sam", rho=RW_RHO),
                                       "m-sam-m8": dict(optimizer="m-sam", rho=RW_RHO, m=8)}
    for descent, score in (("uniform", "finite-difference"), ("weighted", "finite-difference"),
                           ("weighted", "norm")):
        arms[rw_label(descent, score)] = _rw(RW_RHO, RW_LAM, descent, score)
    runs = []
    for noise in ((0.4,) if quick else STUDY_NOISE):
        runs += [_run(f"{arm}-noise{round(noise * 100)}", arm, kw, quick, (), noise)
                 for arm, kw in arms.items()]
    return runs


_STUDY_NOTES = (
    "MNIST-1D (4000 / 1000 samples), MLP 40-256-256-10, batch 128, 20 epochs, SGD momentum 0.9, weight decay "
    f"5e-4, cosine from 0.05; RW-SAM lambda {RW_LAM} unless swept, probe radius {RW_DELTA}; m-SAM over "
    "micro-batches of m. Standard mode = paper mode (about 40 min on one core for the three parts). The "
    "paper's descent pass, lambda, delta and noise model are UNCONFIRMED; 'norm' scores are beyond the paper."
)

register(Experiment(
    "rw-study-compare",
    "SGD, SAM, m-SAM (m=32, 8), RW-SAM {uniform, weighted} x {fd, norm} for rho in {0.05, 0.1, 0.2}",
    _study_compare, STUDY_SEEDS, chapter="05_reweighted_sam",
    notes=_STUDY_NOTES + " tr V and tr H (Hutchinson, 32 probes) on the first 1000 training samples at the "
                         "end.",
))

register(Experiment(
    "rw-study-lambda",
    "RW-SAM {uniform, weighted} x {fd, norm} at rho 0.05 for lambda in {0.3, 1, 3, 10}",
    _study_lambda, STUDY_SEEDS, chapter="05_reweighted_sam", notes=_STUDY_NOTES,
))

register(Experiment(
    "rw-study-noise",
    "SGD, SAM, m-SAM (m=8), RW-SAM at 20, 40, 60 % symmetric label noise: accuracy, weight on mislabelled",
    _study_noise, STUDY_SEEDS, chapter="05_reweighted_sam",
    notes=_STUDY_NOTES + " Label noise: each corrupted label moves to one of the other 9 classes, drawn "
                         "with the run's seed.",
))
