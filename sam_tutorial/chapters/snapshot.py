r"""Noise and curvature along a training trajectory: snapshots of :math:`\operatorname{tr}V`, the
Fisher traces, the Hessian trace and the top of both spectra, and a recorder that takes them during
training.

Near a minimum of a log-loss, the paper's §3.5 argues :math:`V\approx F\approx\nabla^2 f`, so a
penalty on :math:`\operatorname{tr}V` is a penalty on the trace of the Hessian. A :class:`Snapshot`
puts the quantities of that chain side by side at one point :math:`x`, over a fixed set of samples:

.. code-block:: text

    G        = per-sample gradients [n, P]                  (sam_tutorial.sgn.variance)
    tr V     = mean_i ||g_i - mean(G)||^2                   emp. Fisher trace = tr V + ||grad f||^2
    tr F     = true Fisher trace, labels drawn from the model  (sgn.fisher.fisher_trace)
    tr H     = Hutchinson estimate with its standard error   (curvature.hessian)
    eig V    = top-k eigenvalues and eigenvectors u_j of V from the n x n Gram matrix
    eig H    = top-k eigenvalues of H by Lanczos             (hessian.top_eigenvalues)
    u_j^T H u_j  the Hessian along V's top directions: equal to eig V_j if V = H there

:class:`SnapshotRecorder` is a metric hook: ``fit(..., metrics={"tr_V": recorder})`` (or any loop that
calls ``recorder(model)``) records a full snapshot at each call and returns :math:`\operatorname{tr}V`
as the scalar the loop logs.

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> net = torch.nn.Linear(3, 4)
>>> x, y = torch.randn(32, 3), torch.randint(0, 4, (32,))
>>> ce = torch.nn.CrossEntropyLoss(reduction="none")
>>> s = snapshot(net, ce, x, y, k=2, n_probes=8)
>>> abs(s.emp_fisher_trace - s.trace_V - s.grad_sq_norm) < 1e-5   # tr F_emp = tr V + ||grad f||^2
True

References:
    Luo, Harandi, Phung & Le, NeurIPS 2025, §3.5. F. Kunstner, L. Balles, P. Hennig, *Limitations of
    the empirical Fisher approximation for natural gradient descent*, NeurIPS 2019. J. Martens, *New
    insights and perspectives on the natural gradient method*, JMLR 2020.
"""


from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import Tensor, nn

from sam_tutorial.config import Inputs, LossFn, as_tuple, check_batch, check_int
from sam_tutorial.curvature import hessian, hutchinson
from sam_tutorial.sgn import per_sample, variance
from sam_tutorial.sgn.fisher import fisher_trace
from sam_tutorial.sgn.functional import eval_mode as _eval
from sam_tutorial.sgn.functional import flat_params, functional_losses
from sam_tutorial.sgn.variance import sgn_eigenvectors

__all__ = ["Snapshot", "SnapshotRecorder", "snapshot", "stack"]


@dataclass(frozen=True)
class Snapshot:
    """Noise and curvature at one point, over the samples given to :func:`snapshot` (plain floats).

    Attributes:
        loss: mean loss :math:`f(x)`.
        grad_sq_norm: :math:`\\|\\nabla f(x)\\|^2`.
        trace_V: :math:`\\operatorname{tr}V(x)`.
        emp_fisher_trace: trace of the empirical Fisher :math:`\\frac1n\\sum_i\\nabla f_i\\nabla f_i^\\top`.
        fisher_trace: trace of the true Fisher (labels from the model); ``nan`` if not computed.
        hessian_trace: Hutchinson estimate of :math:`\\operatorname{tr}\\nabla^2 f`.
        hessian_trace_se: its standard error over the probes.
        sgn_eigs: top eigenvalues of :math:`V`, descending (empty without spectra).
        hessian_eigs: top eigenvalues of :math:`\\nabla^2 f`, descending (empty without spectra).
        hessian_along_sgn: :math:`u_j^\\top\\nabla^2 f\\,u_j` for the unit top eigenvectors
            :math:`u_j` of :math:`V` (empty without spectra).
    """

    loss: float
    grad_sq_norm: float
    trace_V: float
    emp_fisher_trace: float
    fisher_trace: float
    hessian_trace: float
    hessian_trace_se: float
    sgn_eigs: tuple[float, ...] = ()
    hessian_eigs: tuple[float, ...] = ()
    hessian_along_sgn: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """A JSON-able dict of the fields."""
        return asdict(self)


def snapshot(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    k: int = 10,
    n_probes: int = 64,
    spectra: bool = True,
    fisher: bool = True,
    seed: int = 0,
) -> Snapshot:
    r"""Measure the SGN and the curvature of ``model`` at its current parameters over the samples.

    Everything is evaluated in eval mode (BatchNorm running statistics, no dropout); the model's
    parameters, buffers and ``training`` flags are left as they were.

    Args:
        model: the network (for ``fisher=True`` a classifier returning logits ``[n, C]``).
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [n]`` (the negative log-likelihood
            of the labels for the Fisher comparisons to mean anything).
        inputs: a tensor or tuple of tensors with the ``n`` samples on dim 0.
        targets: targets on dim 0.
        k: number of top eigenvalues of :math:`V` and of :math:`\nabla^2 f` (``spectra=True``).
        n_probes: Rademacher probes of the Hutchinson estimate of :math:`\operatorname{tr}\nabla^2 f`
            (at least 2 for a standard error).
        spectra: also compute the spectra and the Hessian along :math:`V`'s top eigenvectors (needs
            the ``[n, P]`` per-sample gradients in memory); otherwise the traces come from the cheap
            per-sample-norm route of :func:`sam_tutorial.sgn.variance.trace_V`.
        fisher: compute the true Fisher trace (:func:`sam_tutorial.sgn.fisher.fisher_trace`, exact over
            the classes); ``nan`` otherwise.
        seed: seed of the Hutchinson probes and of the Lanczos start vector.

    Returns:
        A :class:`Snapshot`.

    Raises:
        ValueError: for ``k < 1`` or ``n_probes < 1``, or as the functions it calls.
    """
    k = check_int("k", k)
    n_probes = check_int("n_probes", n_probes)
    inputs = as_tuple(inputs)
    check_batch(inputs, targets)
    with _eval(model, True):
        w = flat_params(model)
        with torch.no_grad():
            loss = float(functional_losses(model, loss_fn)(w, inputs, targets).double().mean())
        sgn_eigs: tuple[float, ...] = ()
        hess_eigs: tuple[float, ...] = ()
        along: tuple[float, ...] = ()
        if spectra:
            grads = per_sample.per_sample_grads(model, loss_fn, inputs, targets).double()
            mean = grads.mean(0)
            grad_sq = float(mean.square().sum())
            trace_v = float(variance.sgn_trace(grads))
            emp_fisher = float(grads.square().sum(1).mean())
            rank_cap = min(k, grads.shape[0] - 1, grads.shape[1])
            if rank_cap >= 1:
                vals, vecs = sgn_eigenvectors(grads, rank_cap)
                hu = hessian.hessian_vector_product(
                    model, loss_fn, inputs, targets, vecs.to(w.dtype), eval_mode=False
                )
                sgn_eigs = tuple(vals.tolist())
                along = tuple((vecs * hu.double()).sum(1).tolist())
            top = hessian.top_eigenvalues(model, loss_fn, inputs, targets, k=min(k, w.numel()), seed=seed,
                                            eval_mode=False)
            hess_eigs = tuple(float(v) for v in top.double())
        else:
            trace_v = float(variance.trace_V(model, loss_fn, inputs, targets, eval_mode=False))
            emp_fisher = float(variance.empirical_fisher_trace(model, loss_fn, inputs, targets,
            eval_mode=False))
            grad_sq = emp_fisher - trace_v
        fisher_tr = float(fisher_trace(model, inputs, eval_mode=False)) if fisher else float("nan")
        values = hutchinson.hutchinson_samples(model, loss_fn, inputs, targets, n_probes=n_probes, seed=seed,
                                              eval_mode=False).double()
        hess_tr = float(values.mean())
        hess_se = float(values.std()) / math.sqrt(n_probes) if n_probes > 1 else float("nan")
    return Snapshot(
        loss=loss,
        grad_sq_norm=grad_sq,
        trace_V=trace_v,
        emp_fisher_trace=emp_fisher,
        fisher_trace=fisher_tr,
        hessian_trace=hess_tr,
        hessian_trace_se=hess_se,
        sgn_eigs=sgn_eigs,
        hessian_eigs=hess_eigs,
        hessian_along_sgn=along,
    )


class SnapshotRecorder:
    """A metric hook that records a :class:`Snapshot` each time it is called with a model.

    Pass it to :func:`sam_tutorial.engine.train.fit` as ``metrics={"tr_V": recorder}`` (``fit`` calls its
    metric hooks at ``config.metric_epochs``), or call it from any training loop. Each call returns
    :math:`\\operatorname{tr}V` as a 0-d tensor, the scalar the loop logs; the full snapshots are in
    ``snapshots``, in call order.

    Args:
        loss_fn: per-sample loss.
        inputs: the samples the snapshots are measured on (e.g. the first 1000 training samples).
        targets: their targets.
        spectra_every: compute spectra at every ``spectra_every``-th call (the first call included);
            ``0`` never. Spectra cost the ``[n, P]`` per-sample gradients and about ``k + 40``
            Hessian-vector products.
        **options: further keyword arguments of :func:`snapshot` (``k``, ``n_probes``, ``fisher``,
            ``seed``).

    Attributes:
        snapshots: the recorded snapshots.
    """

    def __init__(
        self, loss_fn: LossFn, inputs: Inputs, targets: Tensor, *, spectra_every: int = 1, **options: object
    ) -> None:
        if isinstance(spectra_every, bool) or not isinstance(spectra_every, int) or spectra_every < 0:
            raise ValueError(f"spectra_every must be an integer >= 0, got {spectra_every!r}")
        if "spectra" in options:
            raise ValueError("pass spectra_every, not spectra, to SnapshotRecorder")
        self.loss_fn, self.inputs, self.targets = loss_fn, inputs, targets
        self.spectra_every, self.options = spectra_every, options
        self.snapshots: list[Snapshot] = []

    def __call__(self, model: nn.Module) -> Tensor:
        calls = len(self.snapshots)
        spectra = self.spectra_every > 0 and calls % self.spectra_every == 0
        snap = snapshot(model, self.loss_fn, self.inputs, self.targets, spectra=spectra,
                        **self.options)  # type: ignore[arg-type]
        self.snapshots.append(snap)
        return torch.tensor(snap.trace_V)


_SCALARS = tuple(f.name for f in fields(Snapshot) if f.type in ("float", float))


def stack(snapshots: Sequence[Snapshot] | Sequence[Sequence[Snapshot]], name: str) -> np.ndarray:
    """One scalar field of a list of snapshots (``[T]``) or of a list of runs (``[R, T]``) as an array.

    Args:
        snapshots: snapshots in time order, or one such list per run (all of the same length).
        name: a scalar field of :class:`Snapshot`, e.g. ``"trace_V"``.

    Raises:
        ValueError: for an unknown or non-scalar field, or runs of different lengths.

    >>> s = Snapshot(1.0, 0.0, 2.0, 2.0, 3.0, 3.0, 0.1)
    >>> stack([[s, s], [s, s]], "trace_V").shape
    (2, 2)
    """
    if name not in _SCALARS:
        raise ValueError(f"name must be one of {', '.join(_SCALARS)}; got {name!r}")
    if snapshots and not isinstance(snapshots[0], Snapshot):
        runs = [[getattr(s, name) for s in run] for run in snapshots]  # type: ignore[union-attr]
        if len({len(r) for r in runs}) > 1:
            raise ValueError("every run must hold the same number of snapshots")
        return np.asarray(runs, dtype=float)
    return np.asarray([getattr(s, name) for s in snapshots], dtype=float)
