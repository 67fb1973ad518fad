"""The curvature and memorisation probe of the recorded m-sweep (book chapter 4, "A real network:
MNIST-1D"; experiment ``m-sharpness-cnn`` of :mod:`sam_tutorial.engine.catalog.m_sharpness`).

After a catalogue run has trained, :func:`probe_metrics` measures on the trained network:

* ``test_acc``, ``test_loss``: on the (clean) test set;
* ``train_acc``: on the noisy training labels the run trained on;
* ``memorised``: the fraction of corrupted training samples predicted with their corrupted label;
* ``clean_fit``: the fraction of uncorrupted training samples predicted with their (correct) label;
* ``trace_V``: :func:`sam_tutorial.sgn.variance.trace_V` (paper §3, the SGN covariance trace);
* ``trace_H``: Hutchinson's estimate of tr H (:func:`sam_tutorial.curvature.hutchinson.hessian_trace`,
  paper §3.5);
* ``lambda_max``: the top Hessian eigenvalue by Lanczos
  (:func:`sam_tutorial.curvature.hessian.top_eigenvalues`);
* ``m_sharpness``: :func:`sam_tutorial.curvature.sharpness.m_sharpness` (the sharpness of the paper's
  Eq. (2) averaged over micro-batches of ``m``),

the last four on the first ``n_samples`` training samples (noisy labels). :func:`probe_run` trains (or
reads from the run cache) one catalogue run and probes it. Command line::

    python -m sam_tutorial.engine.probe m-sharpness-cnn sgd 2 [--mode paper] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sam_tutorial.engine.data import Dataset, load_dataset
from sam_tutorial.engine.measure import evaluate
from sam_tutorial.engine.train_config import cross_entropy

__all__ = ["ProbeSettings", "main", "probe_metrics", "probe_run"]


@dataclass(frozen=True)
class ProbeSettings:
    """What the probe measures with (the recorded m-sweep's values are the defaults).

    Attributes:
        n_samples: the first training samples the curvature metrics use.
        hutchinson_probes: Rademacher probes of the tr H estimate.
        lanczos_steps: Krylov dimension of the lambda_max estimate.
        sharpness_m: micro-batch size of the m-sharpness.
        sharpness_rho: radius of the m-sharpness.
        sharpness_steps: normalised ascent steps of the m-sharpness (step ``0.1 * rho``).
        seed: seed of the probes and of the Lanczos start vector.
    """

    n_samples: int = 1000
    hutchinson_probes: int = 20
    lanczos_steps: int = 30
    sharpness_m: int = 8
    sharpness_rho: float = 0.05
    sharpness_steps: int = 5
    seed: int = 0


def probe_metrics(
    model: nn.Module, data: Dataset, settings: ProbeSettings = ProbeSettings()
) -> dict[str, float]:
    """Measure the trained ``model`` on ``data`` (module docstring: the metrics and their meaning).

    Args:
        model: the trained network (not modified; on the device the metrics run on).
        data: the data set it trained on, with its label noise (``clean_train_targets``).
        settings: sample count, probe counts and the m-sharpness's ``m``, ``rho`` and steps.

    Returns:
        ``{metric: value}``; ``memorised`` is NaN without corrupted samples, ``clean_fit`` without clean ones.

    Raises:
        ValueError: if ``settings.n_samples`` is not in ``[1, n_train]`` or ``sharpness_m`` does not
            divide it.
    """
    from sam_tutorial.curvature.hessian import top_eigenvalues
    from sam_tutorial.curvature.hutchinson import hessian_trace
    from sam_tutorial.curvature.sharpness import m_sharpness
    from sam_tutorial.sgn.variance import trace_V

    n_train = len(data.train[0])
    if not 1 <= settings.n_samples <= n_train:
        raise ValueError(f"probe_metrics: settings.n_samples must be in [1, {n_train}] (the training set's "
                         f"size), got {settings.n_samples}")
    device = next(model.parameters()).device
    xs, ys = data.train[0].to(device), data.train[1].to(device)
    clean = data.clean_train_targets.to(device)
    test_loss, test_acc = evaluate(model, data.test[0].to(device), data.test[1].to(device))
    _, train_acc = evaluate(model, xs, ys)
    with torch.no_grad():
        was_training = model.training
        model.eval()
        pred = torch.cat([model(xs[i : i + 1000]).argmax(1) for i in range(0, n_train, 1000)])
        model.train(was_training)
    corrupted = ys != clean
    nan = torch.tensor(float("nan"), device=device)
    memorised = (pred == ys)[corrupted].float().mean() if corrupted.any() else nan
    clean_fit = (pred == ys)[~corrupted].float().mean() if (~corrupted).any() else nan
    x, y = xs[: settings.n_samples], ys[: settings.n_samples]
    s = settings
    values = {
        "test_acc": test_acc, "train_acc": train_acc, "test_loss": test_loss,
        "trace_V": trace_V(model, cross_entropy, x, y),
        "trace_H": hessian_trace(model, cross_entropy, x, y, n_probes=s.hutchinson_probes, seed=s.seed),
        "lambda_max": top_eigenvalues(model, cross_entropy, x, y, 1, n_iter=s.lanczos_steps, seed=s.seed)[0],
        "memorised": memorised, "clean_fit": clean_fit,
        "m_sharpness": m_sharpness(model, cross_entropy, x, y, rho=s.sharpness_rho, m=s.sharpness_m,
                                   n_iters=s.sharpness_steps, seed=s.seed),
    }
    return {k: float(v) for k, v in values.items()}


def probe_run(experiment: str, label: str, seed: int, *, mode: str = "paper", out: Path | None = None,
              device: torch.device | None = None,
              settings: ProbeSettings = ProbeSettings()) -> dict[str, float]:
    """Train (or read from the run cache) one catalogue run, then :func:`probe_metrics` its final weights.

    Args:
        experiment: a catalogue experiment (e.g. ``"m-sharpness-cnn"``).
        label: one of its runs in ``mode`` (e.g. ``"sgd"``).
        seed: the run's seed.
        mode: the experiment's mode.
        out: the run cache folder (default: :func:`sam_tutorial.engine.runs.runs_root`).
        device: where to train and probe (default: CPU).
        settings: the probe's settings.

    Returns:
        The probe's metrics.

    Raises:
        KeyError: for an unknown experiment.
        ValueError: for a label the mode does not run.
    """
    from sam_tutorial import config as cfg
    from sam_tutorial.engine.catalog.registry import get_experiment
    from sam_tutorial.engine.models import build_model
    from sam_tutorial.engine.runs import run_hash, run_one, run_path, runs_root
    from sam_tutorial.engine.storage import load_checkpoint

    exp = get_experiment(experiment)
    specs = {s.label: s for s in exp.runs(mode)}
    if label not in specs:
        raise ValueError(f"probe_run: {experiment} has no run {label!r} in mode {mode!r}; "
                         f"choose one of {sorted(specs)}")
    spec = specs[label]
    device = device if device is not None else torch.device("cpu")
    root = runs_root(out)
    run_one(exp, mode, spec, seed, out=root, device=device, specs=specs)
    digest = run_hash(exp, mode, spec, seed, specs, 1)
    state = load_checkpoint(run_path(root, exp, mode, spec, seed, digest).with_suffix(".pt"), digest)
    d = spec.data
    data = load_dataset(d.name, None, d.label_noise, seed, n_train=d.n_train, n_test=d.n_test,
                        label_noise_kind=d.label_noise_kind)
    cfg.seed_everything(seed)
    model = build_model(spec.model, num_classes=data.num_classes, input_shape=data.input_shape,
                        **dict(spec.model_options))
    model.load_state_dict(state["model"])
    return probe_metrics(model.to(device), data, settings)


def main(argv: list[str] | None = None) -> int:
    """``python -m sam_tutorial.engine.probe EXPERIMENT LABEL SEED``: print the probe's metrics as JSON."""
    parser = argparse.ArgumentParser(prog="python -m sam_tutorial.engine.probe",
                                     description="Probe one catalogue run (engine.probe's docstring).")
    parser.add_argument("experiment")
    parser.add_argument("label")
    parser.add_argument("seed", type=int)
    parser.add_argument("--mode", default="paper")
    parser.add_argument("--out", type=Path, default=None, help="run cache folder")
    args = parser.parse_args(argv)
    try:
        metrics = probe_run(args.experiment, args.label, args.seed, mode=args.mode, out=args.out)
    except (KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
