r"""RW-SAM's ingredients as analysis tools: Gibbs weights, per-sample scores and how good they are.

RW-SAM (paper §5) weights the samples of a batch by :math:`p=\operatorname{softmax}(\lambda s)`, the maximiser
over the simplex of :math:`\langle p,s\rangle+\mathbb H(p)/\lambda` (:func:`gibbs_objective`, whose maximum is
:func:`gibbs_value`), with scores :math:`s_i` that estimate the per-sample gradient norms
:math:`\|\nabla f_i\|`. This module computes the three kinds of score the chapter compares,

======================= ======================================================================
``"finite-difference"`` :math:`\|z\|\,|f_i(w+\delta u)-f_i(w)|/\delta\approx|z^\top\nabla f_i|` with
                        :math:`u=z/\|z\|`: one forward at distance ``delta`` :math:`=\delta` from
                        :math:`w` (the probe radius, as in :class:`~sam_tutorial.optim.rwsam.RWSAM`)
``"exact"``             :math:`|z^\top\nabla f_i|` exactly, by forward-mode differentiation
``"norm"``              :math:`\sqrt{2/\pi}\,\|\nabla f_i\|`: the exact norms, scaled like the probes
======================= ======================================================================

with :math:`z` Rademacher (entries ±1, so :math:`\|z\|=\sqrt d`). The first two names are RW-SAM's own
``score`` values (``sam_tutorial.optim.rwsam.SCORES``); ``"norm"`` is an oracle beyond the paper. Since
:math:`\mathbb E|z^\top g|\approx\sqrt{2/\pi}\,\|g\|` in high dimension, all three are on the same scale,
independent of the model size d, and a given λ means the same in each (the scale of the package's
RW-SAM with a probe of radius δ). The probe is shared by the batch, as in RW-SAM.

Quality measures: :func:`spearman` (rank agreement with the true norms), :func:`effective_batch`
(:math:`1/\sum p_i^2`), :func:`weight_share` (the weight on a subset, e.g. mislabelled samples),
:func:`square_probe_variance` (the closed form of claim C9).

>>> s = torch.tensor([1.0, 2.0, 3.0])
>>> p = gibbs_weights(s, 2.0)
>>> bool(torch.isclose(gibbs_objective(p, s, 2.0), gibbs_value(s, 2.0)))
True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from sam_tutorial import stats
from sam_tutorial.config import check_nonneg
from sam_tutorial.optim.rwsam import SCORES as _RWSAM_SCORES
from sam_tutorial.optim.rwsam import gibbs_weights  # the weights RW-SAM itself uses (one definition)
from sam_tutorial.sgn.fast_norms import per_sample_sq_norms, supports_fast_norms
from sam_tutorial.sgn.per_sample import per_sample_grads
from sam_tutorial.sgn.variance import _check_grads

__all__ = [
    "SCORES",
    "SQRT_2_OVER_PI",
    "effective_batch",
    "gibbs_objective",
    "gibbs_value",
    "gibbs_weights",
    "maximize_on_simplex",
    "maximize_unrelaxed",
    "probe_scores",
    "rademacher_probe",
    "spearman",
    "square_probe_variance",
    "weight_share",
]

LossFn = Callable[[Tensor, Tensor], Tensor]

SCORES: tuple[str, ...] = (*dict.fromkeys((*_RWSAM_SCORES, "norm")),)
"""The per-sample scores of the table above, RW-SAM's ``score`` values (finite difference, exact directional
derivative) and the exact norm."""

_OLD_SCORES = {"fd": "finite-difference", "jvp": "exact"}
"""Deprecated spellings of :data:`SCORES`, still accepted with a warning."""

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def gibbs_objective(p: Tensor, scores: Tensor, lam: float) -> Tensor:
    r""":math:`\langle p,s\rangle+\mathbb H(p)/\lambda` for ``p`` on the simplex (rows; ``0 log 0 = 0``).

    Book: chapter 5, "From m-SAM's cost to reweighting"; paper: §5, the Gibbs weights (claim C8).
    """
    check_nonneg("lam", lam, positive=True)
    entropy = -torch.special.xlogy(p, p).sum(-1)
    return (p * scores).sum(-1) + entropy / lam


def gibbs_value(scores: Tensor, lam: float) -> Tensor:
    r"""The maximum :math:`\frac1\lambda\log\sum_ie^{\lambda s_i}` of :func:`gibbs_objective`.

    Book: chapter 5, "From m-SAM's cost to reweighting"; paper: §5, the Gibbs weights (claim C8).
    """
    check_nonneg("lam", lam, positive=True)
    return torch.logsumexp(lam * scores, dim=-1) / lam


def maximize_on_simplex(scores: Tensor, lam: float, *, steps: int = 2000, lr: float = 0.5) -> Tensor:
    r"""Maximise :func:`gibbs_objective` directly by mirror (exponentiated-gradient) ascent from uniform.

    Book: chapter 5, "From m-SAM's cost to reweighting"; paper: §5, the Gibbs weights (claim C8).

    An independent check of the Gibbs form: the iteration never uses the softmax solution.
    """
    check_nonneg("lam", lam, positive=True)
    q = torch.full_like(scores, 1.0 / scores.shape[-1])
    step = lr / max(1.0, lam)  # the entropy term's curvature grows like 1/(lam q); keep the step stable
    for _ in range(steps):
        log_q = q.log() + step * (lam * scores - q.log() - 1)
        q = torch.softmax(log_q, dim=-1)
    return q


def maximize_unrelaxed(grads: Tensor, lam: float, *, steps: int = 2000, lr: float = 0.2) -> Tensor:
    r"""A maximiser of the *unrelaxed* problem :math:`\|\sum_ip_ig_i\|+\mathbb H(p)/\lambda` over the simplex
    (rows of ``grads`` are the :math:`g_i`), by mirror ascent from the uniform distribution.

    Book: chapter 5, "From m-SAM's cost to reweighting"; paper: §5, the Gibbs weights (claim C8).

    The objective is not concave (the norm is convex in :math:`p`), so this is a local maximiser. When all
    :math:`g_i` point the same way, :math:`\|\sum_ip_ig_i\|=\sum_ip_i\|g_i\|` and the answer is the Gibbs
    weights of the norms; otherwise the two differ, which is what RW-SAM's relaxation discards.
    """
    check_nonneg("lam", lam, positive=True)
    _check_grads(grads)
    q = torch.full(grads.shape[:1], 1.0 / grads.shape[0], dtype=grads.dtype, device=grads.device)
    step = lr * min(1.0, lam)
    for _ in range(steps):
        v = q @ grads
        ascent = grads @ (v / v.norm().clamp_min(torch.finfo(v.dtype).tiny)) - (q.log() + 1) / lam
        q = torch.softmax(q.log() + step * ascent, dim=-1)
    return q


def effective_batch(p: Tensor) -> Tensor:
    r""":math:`1/\sum_ip_i^2`: the number of equally weighted samples with the same concentration.

    Book: chapter 5, "What the shared probe does to the effective batch".
    """
    return 1.0 / p.square().sum(-1)


def weight_share(p: Tensor, mask: Tensor) -> Tensor:
    """The total weight ``p`` puts on the samples where ``mask`` holds.

    Book: chapter 5, "Label noise"; paper: Table 4.
    """
    return (p * mask.to(p.dtype)).sum(-1)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of two 1-d tensors (ties get their average rank), as a 0-d float64
    tensor: :func:`sam_tutorial.stats.spearman` on the tensors' values.

    Book: chapter 5, "The estimator"; paper: §5, the finite-difference estimator (claim C9).
    """
    return torch.tensor(stats.spearman(a.detach().cpu().tolist(), b.detach().cpu().tolist()),
                        dtype=torch.float64)


def square_probe_variance(g: Tensor, kind: str = "rademacher") -> Tensor:
    r"""Variance of :math:`(z^\top g)^2` (claim C9): :math:`2(\|g\|^4-\sum_jg_j^4)` for Rademacher ``z``,
    :math:`2\|g\|^4` for Gaussian ``z``; rows of ``g`` are separate vectors.

    Book: chapter 5, "The estimator"; paper: claim C9.
    """
    sq = g.square().sum(-1)
    if kind == "rademacher":
        return 2 * (sq.square() - g.pow(4).sum(-1))
    if kind == "gaussian":
        return 2 * sq.square()
    raise ValueError(f"kind must be 'rademacher' or 'gaussian'; got {kind!r}")


def rademacher_probe(model: nn.Module, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """A ±1 tangent for every trainable parameter of ``model`` (a dict by parameter name).

    Book: chapter 5, "The estimator"; paper: §5, the finite-difference estimator (claim C9).
    """
    return {
        k: (torch.randint(0, 2, v.shape, generator=generator, device=v.device) * 2 - 1).to(v.dtype)
        for k, v in model.named_parameters() if v.requires_grad
    }


def _losses(model: nn.Module, loss_fn: LossFn, params: dict[str, Tensor], x: Tensor, y: Tensor,
            dtype: torch.dtype | None) -> Tensor:
    if dtype is None:
        return loss_fn(functional_call(model, params, (x,)), y)
    with torch.autocast(x.device.type, dtype=dtype):
        return loss_fn(functional_call(model, params, (x,)), y).float()


def _rng_state(device: torch.device) -> Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def probe_scores(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    *,
    method: str = "finite-difference",
    probe: dict[str, Tensor] | None = None,
    delta: float = 1e-2,
    autocast: torch.dtype | None = None,
    signed: bool = False,
    same_randomness: bool = True,
    radius: float | None = None,
) -> Tensor:
    r"""Per-sample scores ``[B]`` of one batch, all on the scale of :math:`\sqrt{2/\pi}\|\nabla f_i\|`.

    Book: chapter 5, "The estimator"; paper: §5, the finite-difference estimator (claim C9).

    Args:
        model: the network (its parameters are not changed; use eval mode to switch dropout off, or
            fix the random state around the call; see the chapter).
        loss_fn: per-sample loss ``loss_fn(outputs, targets) -> [B]``.
        x: inputs ``[B, ...]``.
        y: targets ``[B]``.
        method: one of :data:`SCORES`.
        probe: the shared probe ``z`` (default: a fresh Rademacher probe); unused by ``"norm"``.
        delta: the probe radius δ of the finite difference, the distance of :math:`w+\delta u` from
            :math:`w` (``"finite-difference"`` only; RW-SAM's ``delta``).
        autocast: run the forward passes under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16``).
        signed: return :math:`z^\top\nabla f_i` with its sign (``"finite-difference"``/``"exact"``).
        same_randomness: run both forward passes of the finite difference from the same random state, so
            that dropout draws the same masks in both (``False`` shows the pitfall: the difference then
            measures the change of masks).
        radius: deprecated name of ``delta``.

    Raises:
        ValueError: for an unknown ``method`` or ``delta <= 0``.
    """
    if radius is not None:
        warnings.warn("probe_scores(radius=) is deprecated; call it delta (RW-SAM's probe radius)",
                      DeprecationWarning, stacklevel=2)
        delta = radius
    if method in _OLD_SCORES:
        warnings.warn(f"method={method!r} is deprecated; use {_OLD_SCORES[method]!r}", DeprecationWarning,
                      stacklevel=2)
        method = _OLD_SCORES[method]
    if method not in SCORES:
        raise ValueError(f"method must be one of {', '.join(SCORES)}; got {method!r}")
    check_nonneg("delta", delta, positive=True)
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if method == "norm":
        if supports_fast_norms(model):
            sq, _ = per_sample_sq_norms(model, loss_fn, x, y)  # leaves .grad untouched
        else:
            sq = per_sample_grads(model, loss_fn, x, y, eval_mode=False).square().sum(1)
        return SQRT_2_OVER_PI * sq.sqrt()
    z = probe if probe is not None else rademacher_probe(model)
    z_norm = math.sqrt(sum(float(t.square().sum()) for t in z.values()))
    if method == "exact":
        d = jvp(lambda p: _losses(model, loss_fn, p, x, y, autocast), (params,), (z,))[1]
    else:
        step = delta / z_norm
        moved = {k: v + step * z[k] for k, v in params.items()}
        with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            state = _rng_state(x.device)
            plus = _losses(model, loss_fn, moved, x, y, autocast)
            if same_randomness:
                _set_rng_state(x.device, state)
            d = plus - _losses(model, loss_fn, params, x, y, autocast)
        d = d * (z_norm / delta)
    return d if signed else d.abs()
