"""What :func:`sam_tutorial.engine.train.fit` measures besides the training loss: :func:`evaluate` (loss
and accuracy without a host synchronisation), the epoch metrics (:func:`builtin_metrics`: tr V, SAM
sharpness, tr H; book chapters 2-5) and the step metrics (:data:`STEP_METRICS`, :func:`step_values`:
RW-SAM's effective batch 1/Σp² and the weight on mislabelled samples of book chapter 5, ‖ε‖), which
``fit`` sums on the device and averages per epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sam_tutorial.engine.data import Dataset
from sam_tutorial.engine.train_config import Metric, TrainConfig, cross_entropy
from sam_tutorial.optim import StepStats

__all__ = ["STEP_METRICS", "StepMetric", "builtin_metrics", "evaluate", "step_values"]


STEP_METRICS: dict[str, str] = {
    "perturbation_norm": "||e||, the length of the step's perturbation (0 for SGD; m-SAM: mean over "
                         "micro-batches)",
    "effective_batch": "1 / sum_i p_i^2 of the weights the perturbation puts on the batch's samples "
                       "(RW-SAM's Gibbs weights, book chapter 5; only for optimizers that report weights)",
    "mislabelled_weight": "sum of those weights over the batch's mislabelled samples (with label noise, "
                          "for optimizers that report weights)",
    "mislabelled_share": "the share of the batch's samples whose label noise corrupted (with label noise)",
}
"""The built-in step metrics of :func:`~sam_tutorial.engine.train.fit`, name -> meaning. Each is averaged
over the steps of an epoch into ``history["step"][name]``; a metric that does not apply to the run is
absent."""


StepMetric = Callable[[StepStats, Tensor], Tensor]
"""A per-step hook ``fn(stats, indices) -> 0-d tensor``: the step's
:class:`~sam_tutorial.optim.base.StepStats` and the batch's rows of the training set (this rank's rows
under ``ctx``). It must not synchronise with the host (no ``.item()``, no boolean indexing)."""


def step_values(stats: StepStats, indices: Tensor, mislabelled: Tensor | None = None) -> dict[str, Tensor]:
    """The built-in :data:`STEP_METRICS` of one step, as 0-d device tensors (no host synchronisation).

    Args:
        stats: what the optimizer's step returned.
        indices: the batch's rows of the training set.
        mislabelled: float ``[N]`` mask of the training samples whose label was corrupted (``None``:
            no label noise).

    >>> from sam_tutorial.optim import StepStats
    >>> z = torch.zeros(())
    >>> p = torch.tensor([0.5, 0.25, 0.25])
    >>> mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    >>> out = step_values(StepStats(z, z, z, z, z, p), torch.tensor([0, 2, 3]), mask)
    >>> {k: round(float(v), 4) for k, v in out.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'perturbation_norm': 0.0, 'effective_batch': 2.6667, 'mislabelled_weight': 0.75,
     'mislabelled_share': 0.6667}
    """
    out = {"perturbation_norm": stats.perturbation_norm.detach().float()}
    weights = stats.weights
    if weights is not None:
        w = weights.detach().float()
        out["effective_batch"] = 1.0 / w.square().sum()
        if mislabelled is not None:
            out["mislabelled_weight"] = (w * mislabelled[indices]).sum()
    if mislabelled is not None:
        out["mislabelled_share"] = mislabelled[indices].mean()
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module, inputs: Tensor, targets: Tensor | tuple[Tensor, ...], batch_size: int = 1000
) -> tuple[Tensor, ...]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) as 0-d device tensors (no host sync).

    Args:
        model: the network; its train/eval mode is restored afterwards.
        inputs: ``[N, ...]``.
        targets: ``[N]`` labels, or a tuple of label tensors (one accuracy each, e.g. noisy and clean).
        batch_size: samples per forward pass.

    Returns:
        ``(loss, accuracy)`` w.r.t. the first target tensor, then the accuracy w.r.t. each further one.
    """
    tgts = targets if isinstance(targets, tuple) else (targets,)
    if len(inputs) == 0:
        raise ValueError("evaluate: inputs hold no samples; an accuracy over none is undefined (not 0.0)")
    was_training = model.training
    model.eval()
    device = inputs.device
    loss = torch.zeros((), device=device)
    correct = torch.zeros(len(tgts), device=device)
    for start in range(0, len(inputs), batch_size):
        out = model(inputs[start : start + batch_size])
        loss += cross_entropy(out, tgts[0][start : start + batch_size]).sum()
        pred = out.argmax(1)
        for k, t in enumerate(tgts):
            correct[k] += (pred == t[start : start + batch_size]).sum()
    model.train(was_training)
    n = len(inputs)
    return (loss / n, correct[0] / n, *(correct[1:] / n))


def builtin_metrics(config: TrainConfig, data: Dataset, device: torch.device) -> dict[str, Metric]:
    """Hooks for ``config.metrics`` on the first ``config.metric_samples`` training samples.

    ``sam_tutorial.sgn.variance`` and ``sam_tutorial.curvature`` are imported only when asked for.
    """
    x = data.train[0][: config.metric_samples].to(device)
    y = data.train[1][: config.metric_samples].to(device)
    hooks: dict[str, Metric] = {}
    if "trace_V" in config.metrics:
        from sam_tutorial.sgn.variance import trace_V

        hooks["trace_V"] = lambda model: trace_V(model, cross_entropy, x, y)
    if "sharpness" in config.metrics:
        from sam_tutorial.curvature.sharpness import sam_sharpness

        hooks["sharpness"] = lambda model: sam_sharpness(model, cross_entropy, x, y, rho=config.sharpness_rho)
    if "trace_H" in config.metrics:
        from sam_tutorial.curvature.hutchinson import hessian_trace

        hooks["trace_H"] = lambda model: hessian_trace(model, cross_entropy, x, y, n_probes=32)
    return hooks
