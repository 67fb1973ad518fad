r"""Chapter 5's recorded study: RW-SAM against SGD, SAM and m-SAM on MNIST-1D, with what the engine does
not log: the Gibbs weights' effective batch :math:`1/\sum_ip_i^2` and the weight on mislabelled samples,
averaged over the steps of every epoch.

The study is too long for a book build (about 30 minutes on one CPU core), so it runs once from the command
line and the chapter loads its JSON (``results/ch5-rwsam-study.json``), which records the command, the
commit, the date and the wall time::

    OMP_NUM_THREADS=1 python -m sam_tutorial.chapters.rwsam_study \\
        --out sam_tutorial/results/ch5-rwsam-study.json

Three parts, all with the MLP 40-256-256-10, batch 128, SGD (momentum 0.9, weight decay 5e-4, cosine
learning rate from 0.05), 20 epochs, seeds 0-2:

* ``compare``: SGD; SAM, m-SAM (m = 32, 8) and RW-SAM {uniform, weighted descent} x {finite-difference,
  exact-norm scores} at λ = 0.1, each for ρ in {0.05, 0.1, 0.2} (the chapter picks the best ρ per arm);
  plus the exact directional-derivative score at ρ = 0.05.
* ``lambda``: RW-SAM at ρ = 0.05 for λ in {0.1, 0.3, 1, 3, 10}.
* ``noise``: 20, 40 and 60 % symmetric label noise; SGD, SAM, m-SAM (m = 8), RW-SAM.

Scores (see :mod:`sam_tutorial.sgn.reweighting`): ``"fd"`` is the package's finite difference (one shared
Rademacher probe, ‖δz‖ ≈ 0.01); ``"norm"`` the exact per-sample gradient norms times √(2/π) (the same
scale); ``"jvp"`` the exact :math:`|z^\top\nabla f_i|` for a fresh shared probe. The two exact scores are
computed here by :class:`ScoredRWSAM`, a study-only subclass that replaces the weights and nothing else.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sam_tutorial.curvature.hutchinson import hessian_trace
from sam_tutorial.engine.data import load_dataset
from sam_tutorial.engine.models import build_model
from sam_tutorial.engine.recorded import find_result
from sam_tutorial.engine.storage import read_json
from sam_tutorial.optim import MSAM, RWSAM, SAM
from sam_tutorial.sgn.reweighting import gibbs_weights, probe_scores, rademacher_probe
from sam_tutorial.sgn.variance import trace_V

__all__ = ["DELTA", "ScoredRWSAM", "arm_label", "load_study", "run_arm", "study_jobs", "summarise"]

DELTA = 0.01
"""RW-SAM's probe radius. The recorded runs were made when ``delta`` was a step along the ±1 probe
(commit e3eb156), with δ = 3.5e-5 on the MLP's 78,858 parameters: a radius of 0.0098."""


def _ce(out: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")


class ScoredRWSAM(RWSAM):
    """RW-SAM whose Gibbs weights come from exact scores (``"norm"``: √(2/π)‖∇f_i‖; ``"jvp"``:
    ``|zᵀ∇f_i|`` for a fresh shared Rademacher probe) instead of its own estimate; everything else
    (passes, perturbation, descent) is the package's RW-SAM. The scores are computed at w before the step,
    through the public ``step``; only the hook that turns scores into weights is replaced (the optimizer's
    own probe still runs, so the time per step of these arms includes it)."""

    def __init__(self, *args: Any, score_kind: str = "norm", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if score_kind not in ("norm", "jvp"):
            raise ValueError(f"score_kind must be 'norm' or 'jvp', got {score_kind!r}")
        self.score_kind = score_kind
        self._probe_gen = torch.Generator().manual_seed(self.seed)
        self._exact: Tensor | None = None

    def step(  # type: ignore[override]
        self, inputs: Any = None, targets: Any = None, loss_fn: Any = None, **kwargs: Any
    ) -> Any:
        if loss_fn is not None:
            if self.score_kind == "norm":
                self._exact = probe_scores(self.model, loss_fn, inputs, targets, method="norm").detach()
            else:
                z = rademacher_probe(self.model, self._probe_gen)
                exact = probe_scores(self.model, loss_fn, inputs, targets, method="exact", probe=z)
                self._exact = exact.detach()
        return super().step(inputs, targets, loss_fn, **kwargs)

    def _gibbs(self) -> Tensor:
        assert self._exact is not None
        self.last_scores = self._exact
        return gibbs_weights(self._exact.float(), self.lam)

    def weights(self, losses: Tensor, plus: Tensor) -> Tensor:  # the optimizer's hook up to e3eb156
        return self._gibbs()

    def _weights_from_scores(self, scores: Tensor) -> Tensor:  # its hook after the probe-radius change
        return self._gibbs()


def _optimizer(arm: Mapping[str, Any], model: nn.Module, base: torch.optim.Optimizer, seed: int) -> Any:
    kind = arm["opt"]
    if kind == "sgd":
        return SAM(model, base, rho=0.0)
    if kind == "sam":
        return SAM(model, base, rho=arm["rho"])
    if kind == "msam":
        return MSAM(model, base, rho=arm["rho"], m=arm["m"], backend="loop")
    kw = dict(rho=arm["rho"], lam=arm["lam"], delta=DELTA, seed=seed,
              weighted_descent=arm.get("weighted", False))
    if arm.get("score", "fd") == "fd":
        return RWSAM(model, base, **kw)
    return ScoredRWSAM(model, base, score_kind=arm["score"], **kw)


def arm_label(arm: Mapping[str, Any]) -> str:
    """A short name: ``sgd``, ``sam``, ``m-sam-m8``, ``rw-sam-uniform-fd``, ``rw-sam-weighted-norm`` ..."""
    if arm["opt"] == "msam":
        return f"m-sam-m{arm['m']}"
    if arm["opt"] == "rwsam":
        return f"rw-sam-{'weighted' if arm.get('weighted') else 'uniform'}-{arm.get('score', 'fd')}"
    return str(arm["opt"])


def run_arm(arm: Mapping[str, Any], seed: int, *, epochs: int = 20, noise: float = 0.0, batch: int = 128,
            lr: float = 0.05, metrics: bool = True) -> dict[str, Any]:
    """Train one arm for one seed; per epoch: test accuracy, mean 1/Σp², weight on mislabelled samples."""
    data = load_dataset("mnist1d", label_noise=noise, seed=0)
    (xtr, ytr), (xte, yte) = data.train, data.test
    mislabelled = ytr != data.clean_train_targets
    torch.manual_seed(seed)
    model = build_model("mlp", num_classes=10, input_shape=(40,), hidden=(256, 256))
    base = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    opt = _optimizer(arm, model, base, seed)
    gen = torch.Generator().manual_seed(seed)
    steps = len(ytr) // batch
    total = epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(base, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    keys = ("test_acc", "ess", "mislabelled_weight", "mislabelled_share")
    hist: dict[str, list[float]] = {k: [] for k in keys}
    seconds = 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(ytr), generator=gen)
        ess, weight, share = [], [], []
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            t0 = time.perf_counter()
            opt.step(xtr[idx], ytr[idx], _ce)
            seconds += time.perf_counter() - t0
            sched.step()
            p = getattr(opt, "last_weights", None)
            if p is not None:
                ess.append(float(1 / p.square().sum()))
                weight.append(float(p[mislabelled[idx]].sum()))
            share.append(float(mislabelled[idx].float().mean()))
        model.eval()
        with torch.no_grad():
            hist["test_acc"].append(float((model(xte).argmax(1) == yte).float().mean()))
        model.train()
        if ess:
            hist["ess"].append(statistics.fmean(ess))
            hist["mislabelled_weight"].append(statistics.fmean(weight))
        hist["mislabelled_share"].append(statistics.fmean(share))
    model.eval()
    with torch.no_grad():
        pred = model(xtr).argmax(1)
    out: dict[str, Any] = dict(arm=dict(arm), label=arm_label(arm), seed=seed, noise=noise, epochs=epochs,
               test_acc=hist["test_acc"][-1], train_acc=float((pred == ytr).float().mean()),
               train_acc_clean=float((pred == data.clean_train_targets).float().mean()),
               sec_per_step=seconds / (epochs * steps), hist=hist)
    out["gap"] = out["train_acc"] - out["test_acc"]
    if metrics:
        out["trace_V"] = float(trace_V(model, _ce, xtr[:1000], ytr[:1000]))
        out["trace_H"] = float(hessian_trace(model, _ce, xtr[:1000], ytr[:1000], n_probes=32))
    return out


def study_jobs() -> dict[str, list[dict[str, Any]]]:
    """The three parts of the study as lists of ``{"arm", "seed", "noise", "metrics"}`` jobs."""
    seeds = (0, 1, 2)
    rw = lambda rho, lam, score, weighted: dict(opt="rwsam", rho=rho, lam=lam, score=score, weighted=weighted)  # noqa: E731
    compare = [dict(arm=dict(opt="sgd"), seed=s) for s in seeds]
    for s in seeds:
        for rho in (0.05, 0.1, 0.2):
            arms = [dict(opt="sam", rho=rho), dict(opt="msam", rho=rho, m=32), dict(opt="msam", rho=rho, m=8)]
            arms += [rw(rho, 0.1, sc, w) for w in (False, True) for sc in ("fd", "norm")]
            compare += [dict(arm=a, seed=s) for a in arms]
        compare += [dict(arm=rw(0.05, 0.1, "jvp", w), seed=s) for w in (False, True)]
    lam = [dict(arm=rw(0.05, lam, sc, w), seed=s) for s in seeds for sc in ("fd", "norm")
           for w in (False, True) for lam in (0.3, 1.0, 3.0, 10.0)]
    noise = [dict(arm=a, seed=s, noise=q, metrics=False) for q in (0.2, 0.4, 0.6) for s in seeds
             for a in (dict(opt="sgd"), dict(opt="sam", rho=0.05), dict(opt="msam", rho=0.05, m=8),
                       rw(0.05, 0.1, "fd", False), rw(0.05, 0.1, "fd", True), rw(0.05, 0.1, "norm", True))]
    return {"compare": compare, "lambda": lam, "noise": noise}


def load_study(path: str | Path | None = None) -> dict[str, Any]:
    """The recorded study (default: ``results/ch5-rwsam-study.json`` of the working directory, of its
    parent (a notebook runs in ``book/``) or of the repository the package was installed from)."""
    if path is None:
        try:
            path = find_result("ch5-rwsam-study.json")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}; run python -m sam_tutorial.chapters.rwsam_study --out "
                                    "results/ch5-rwsam-study.json") from err
    study: dict[str, Any] = read_json(path)
    return study


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    v = list(values)
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def summarise(records: list[dict[str, Any]], keys: tuple[str, ...] = ("test_acc", "gap", "trace_V", "trace_H",
              "sec_per_step"), group: tuple[str, ...] = ("label", "rho")) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of ``keys``, one row per distinct ``group`` value."""
    rows: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        g = tuple(r.get(k, r["arm"].get(k)) for k in group)
        rows.setdefault(g, []).append(r)
    out = []
    for g, rs in rows.items():
        row: dict[str, Any] = dict(zip(group, g), n=len(rs))
        for k in keys:
            if all(k in r for r in rs):
                row[k] = _mean_std(r[k] for r in rs)
        out.append(row)
    return out


def best_rho(rows: list[dict[str, Any]], key: str = "test_acc") -> dict[str, dict[str, Any]]:
    """For each label, the row (over ρ) with the highest mean ``key``."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["label"] not in best or r[key][0] > best[r["label"]][key][0]:
            best[r["label"]] = r
    return best


def _median_seconds(fn: Any, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _costs(model: nn.Module, x: Tensor, y: Tensor, repeats: int) -> dict[str, float]:
    params = {k: v.detach() for k, v in model.named_parameters()}
    floats = {k: v.clone() for k, v in model.named_buffers() if v.is_floating_point()}
    ints = {k: v for k, v in model.named_buffers() if not v.is_floating_point()}
    z = rademacher_probe(model)
    zero = {k: torch.zeros_like(v) for k, v in floats.items()}

    def losses(p: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:  # buffers as inputs: BatchNorm-safe
        bufs = {**b, **{k: v.clone() for k, v in ints.items()}}
        return _ce(torch.func.functional_call(model, {**p, **bufs}, (x,)), y)

    def forward() -> None:
        with torch.no_grad():
            _ce(model(x), y)

    def forward_backward() -> None:
        model.zero_grad()
        _ce(model(x), y).mean().backward()

    t = {"forward": _median_seconds(forward, repeats),
         "forward_backward": _median_seconds(forward_backward, repeats),
         "jvp": _median_seconds(lambda: torch.func.jvp(losses, (params, floats), (z, zero)), repeats)}
    t["jvp/forward"], t["fwd_bwd/forward"] = t["jvp"] / t["forward"], t["forward_backward"] / t["forward"]
    return t


def step_costs(repeats: int = 7) -> dict[str, dict[str, float]]:
    """Median seconds of a forward pass, a forward+backward pass and a forward-mode ``jvp`` of the per-sample
    losses (the exact score's cost), on the chapter's MLP (batch 128) and a width-8 ResNet-18 (batch 32)."""
    out = {}
    for name, options, shape in (("mlp", {"hidden": (256, 256)}, (128, 40)),
                                 ("resnet18-w8", {"width": 8}, (32, 3, 32, 32))):
        torch.manual_seed(0)
        model = build_model(name.split("-")[0], num_classes=10, input_shape=shape[1:], **options).train()
        out[name] = _costs(model, torch.randn(*shape), torch.randint(0, 10, (shape[0],)), repeats)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the study and write the JSON (after every part, so an interrupted study keeps what it has)."""
    parser = argparse.ArgumentParser(description="Chapter 5's recorded RW-SAM study (~30 min, one core)")
    parser.add_argument("--out", default="sam_tutorial/results/ch5-rwsam-study.json")
    parser.add_argument("--parts", nargs="*", default=["compare", "lambda", "noise"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    jobs = study_jobs()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result: dict[str, Any] = {"cost": step_costs()}
    for part in args.parts:
        result[part] = []
        for j in jobs[part]:
            result[part].append(run_arm(j["arm"], j["seed"], noise=j.get("noise", 0.0),
                                        metrics=j.get("metrics", True)))
            print(part, len(result[part]), "/", len(jobs[part]), result[part][-1]["label"], flush=True)
        result["provenance"] = dict(
            command="OMP_NUM_THREADS=1 python -m sam_tutorial.chapters.rwsam_study --out " + args.out,
            commit=commit, torch=torch.__version__, device="cpu", threads=1, date=time.strftime("%Y-%m-%d"),
            wall_seconds=time.time() - started, parts=list(result.keys() - {"provenance", "cost"}))
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
