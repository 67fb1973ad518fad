r"""The SGN covariance :math:`V`: its trace, its spectrum and eigenvectors, and the empirical Fisher.

For a model with per-sample losses :math:`f_i(x)`, :math:`i=1..n`, and :math:`f=\frac1n\sum_i f_i`,
the SGN covariance is (paper §3.1)

.. math::

    V(x) = \frac1n\sum_{i=1}^n (\nabla f_i(x)-\nabla f(x))(\nabla f_i(x)-\nabla f(x))^\top ,
    \qquad \operatorname{tr}V = \frac1n\sum_i\|\nabla f_i\|^2 - \|\nabla f\|^2 .

:func:`trace_V` takes a model (per-sample norms by hooks, or per-sample gradients by ``vmap``);
:func:`sgn_trace`, :func:`sgn_spectrum` and :func:`sgn_eigenvectors` take the per-sample gradients
``[n, P]`` of :func:`sam_tutorial.sgn.per_sample.per_sample_grads`. The spectrum comes from the
:math:`n\times n` Gram matrix of the centred gradients, never from a :math:`P\times P` matrix.
Everything stays on the model's device; nothing calls ``.item()``.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> model = torch.nn.Linear(3, 2)
>>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
>>> loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
>>> bool(trace_V(model, loss_fn, x, y) > 0)
True

References:
    Luo, Harandi, Phung & Le, *Unveiling m-Sharpness Through the Structure of Stochastic Gradient
    Noise*, NeurIPS 2025, §3.
"""


from __future__ import annotations

import torch
from torch import Tensor, nn

from sam_tutorial.config import Inputs, LossFn, as_tuple, check_batch, check_int, check_tensor
from sam_tutorial.sgn.fast_norms import ModuleReusedError, _sq_norms, supports_fast_norms
from sam_tutorial.sgn.functional import check_independent
from sam_tutorial.sgn.functional import eval_mode as _eval  # functions here take a keyword `eval_mode`
from sam_tutorial.sgn.per_sample import _chunk_size, _grad_chunks

__all__ = ["sgn_eigenvectors", "empirical_fisher_trace", "sgn_spectrum", "sgn_trace", "trace_V"]


def trace_V(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
    eval_mode: bool = True,
    method: str = "auto",
) -> Tensor:
    r"""The trace of the SGN covariance over the given samples,
    :math:`\operatorname{tr}V=\frac1n\sum_i\|\nabla f_i-\nabla f\|^2`.

    Book: chapter 2, "The SGN covariance"; paper: tr V of Thms. 3.3-3.5.

    Two routes give the same number:

    * ``"hooks"`` (:mod:`sam_tutorial.sgn.fast_norms`): per-sample squared norms from one forward and
      one backward pass, then :math:`\frac1n\sum_i\|\nabla f_i\|^2-\|\nabla f\|^2`. Costs about
      1-2 forward+backward passes; in float32 it loses accuracy only when
      :math:`\operatorname{tr}V\ll\|\nabla f\|^2`.
    * ``"vmap"``: per-sample gradients from :func:`torch.func.vmap` chunk by chunk, merged with Chan
      et al.'s pairwise update of the sum of squared deviations (no cancellation, never all
      ``B x P`` numbers at once). Works for any model :mod:`torch.func` can differentiate.

    ``"auto"`` takes ``"hooks"`` when :func:`sam_tutorial.sgn.fast_norms.supports_fast_norms` holds and
    no module runs twice in the forward pass, ``"vmap"`` otherwise.

    Args:
        model: the network.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0 (the :math:`n` samples).
        targets: targets with the batch on dim 0.
        chunk_size: samples per chunk (``None``: the whole set at once for ``"hooks"``, about
            :math:`2^{21}` numbers a chunk for ``"vmap"``).
        eval_mode: evaluate in eval mode (see :func:`~sam_tutorial.sgn.per_sample.per_sample_grads`).
        method: ``"auto"``, ``"hooks"`` or ``"vmap"``.

    Returns:
        0-d tensor (the normalisation is :math:`1/n`, as in the paper's definition of :math:`V`),
        accumulated in at least float32.

    Raises:
        ValueError: as :func:`~sam_tutorial.sgn.per_sample.per_sample_grads`; for an unknown ``method``;
            for ``"hooks"`` on an unsupported model.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = net.weight.zero_()
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> trace_V(net, lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2, x, torch.ones(2))
    tensor(2.)
    """
    with _eval(model, eval_mode):
        moments = _moments_by_hooks(model, loss_fn, inputs, targets, chunk_size, method)
        if moments is not None:
            return moments[0] - moments[1].square().sum()
        count = 0
        mean: Tensor | None = None
        m2: Tensor | None = None
        for g in _grad_chunks(model, loss_fn, inputs, targets, chunk_size):
            g = g.to(torch.promote_types(g.dtype, torch.float32))
            k = g.shape[0]
            mu = g.mean(0)
            m2_chunk = (g - mu).square().sum()
            if mean is None or m2 is None:
                mean, m2 = mu, m2_chunk
            else:
                delta = mu - mean
                total = count + k
                m2 = m2 + m2_chunk + delta.square().sum() * (count * k / total)
                mean = mean + delta * (k / total)
            count += k
    assert m2 is not None
    return m2 / count


_METHODS = ("auto", "hooks", "vmap")


def _use_hooks(model: nn.Module, method: str) -> bool:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}; got {method!r}")
    if method == "vmap":
        return False
    ok = supports_fast_norms(model)
    if method == "hooks" and not ok:
        raise ValueError(
            "method='hooks' needs every trainable parameter in a Linear, Conv1d/Conv2d (groups=1), "
            "eval-mode BatchNorm, GroupNorm or LayerNorm; use method='vmap'"
        )
    return ok


def _hook_moments(
    model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, chunk_size: int | None
) -> tuple[Tensor, Tensor]:
    """Mean squared per-sample gradient norm and mean gradient, chunk by chunk, via hooks."""
    inputs = as_tuple(inputs)
    batch = check_batch(inputs, targets)
    check_independent(model, loss_fn, inputs, targets, "per_sample_sq_norms")  # once, not per chunk
    step = batch if chunk_size is None else _chunk_size(chunk_size, batch, 1)
    sq_sum: Tensor | None = None
    grad_sum: Tensor | None = None
    for start in range(0, batch, step):
        stop = min(start + step, batch)
        sq, mean_grad = _sq_norms(model, loss_fn, tuple(t[start:stop] for t in inputs), targets[start:stop])
        k = stop - start
        sq_sum = sq.sum() if sq_sum is None else sq_sum + sq.sum()
        grad_sum = mean_grad * k if grad_sum is None else grad_sum + mean_grad * k
    assert sq_sum is not None and grad_sum is not None
    return sq_sum / batch, grad_sum / batch


def _moments_by_hooks(
    model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, chunk_size: int | None, method: str
) -> tuple[Tensor, Tensor] | None:
    """``(mean ||g_i||^2, mean g)`` by the hooks route when ``method`` allows it, else ``None`` (use vmap).

    A module used twice in one forward defeats the hooks: ``"auto"`` then falls back to vmap,
    ``"hooks"`` raises.
    """
    if not _use_hooks(model, method):
        return None
    try:
        return _hook_moments(model, loss_fn, inputs, targets, chunk_size)
    except ModuleReusedError:
        if method == "hooks":
            raise
        return None


def sgn_trace(grads: Tensor) -> Tensor:
    r""":math:`\operatorname{tr}V` from per-sample gradients stacked as rows (``[n, P]``).

    Book: chapter 2, "The SGN covariance"; paper: tr V of Thms. 3.3-3.5.

    >>> sgn_trace(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    tensor(1.)
    """
    _check_grads(grads)
    return (grads - grads.mean(0)).square().sum(1).mean()


def _check_grads(grads: Tensor) -> None:
    """A stack of per-sample gradients: a floating tensor ``[n, P]``, n >= 1, every entry finite (a NaN
    would make the trace NaN and reach the eigensolvers of :func:`sgn_spectrum`)."""
    check_tensor("grads", grads, floating=True, finite=True)
    if grads.dim() != 2 or grads.shape[0] < 1:
        raise ValueError(f"grads must have shape [n, P] with n >= 1, got {tuple(grads.shape)}")


def sgn_spectrum(grads: Tensor, k: int | None = None) -> Tensor:
    r"""The largest eigenvalues of :math:`V=\frac1n G_c^\top G_c` (:math:`G_c` the centred rows).

    Book: chapter 2, "Spectra: more than the traces"; paper: §3.5.

    When :math:`n<P` the nonzero spectrum is taken from the :math:`n\times n` Gram matrix
    :math:`\frac1n G_cG_c^\top`, which has the same nonzero eigenvalues; otherwise from the
    :math:`P\times P` covariance.

    Args:
        grads: per-sample gradients ``[n, P]`` (e.g. from
            :func:`~sam_tutorial.sgn.per_sample.per_sample_grads`).
        k: how many eigenvalues; ``None`` returns all :math:`\min(n, P)`.

    Returns:
        Tensor ``[k]``, descending.

    Raises:
        ValueError: if ``grads`` is not ``[n, P]`` or ``k`` is not in ``[1, min(n, P)]``.

    >>> sgn_spectrum(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    tensor([1., 0.])
    """
    centred, k = _centred(grads, k)
    n, p = grads.shape
    gram = centred @ centred.T if n <= p else centred.T @ centred
    evals = torch.linalg.eigvalsh(gram / n)
    return evals.flip(0)[:k]


def _centred(grads: Tensor, k: int | None) -> tuple[Tensor, int]:
    """The centred rows of ``grads`` and ``k`` checked against ``min(n, P)`` (``None``: all of them)."""
    _check_grads(grads)
    size = min(grads.shape)
    if k is None:
        k = size
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise ValueError(f"k must be an integer in [1, min(n, P)] = [1, {size}], got {k!r}")
    return grads - grads.mean(0), k


def empirical_fisher_trace(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
    eval_mode: bool = True,
    method: str = "auto",
) -> Tensor:
    r"""The trace of the empirical Fisher :math:`\frac1n\sum_i\nabla f_i\nabla f_i^\top`, i.e.
    :math:`\frac1n\sum_i\|\nabla f_i\|^2=\operatorname{tr}V+\|\nabla f\|^2`.

    Book: chapter 2, "Near a minimum"; paper: §3.5.

    With ``loss_fn`` the negative log-likelihood of the observed labels this is the empirical
    Fisher of the paper's §3.5 (:math:`V\approx` Fisher near a minimum, where :math:`\nabla f\approx0`).

    Args:
        model: the network.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        targets: targets with the batch on dim 0.
        chunk_size: samples per chunk (see :func:`trace_V`).
        eval_mode: evaluate in eval mode (see :func:`~sam_tutorial.sgn.per_sample.per_sample_grads`).
        method: ``"auto"``, ``"hooks"`` or ``"vmap"`` (see :func:`trace_V`).

    Returns:
        0-d tensor.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = net.weight.zero_()
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> empirical_fisher_trace(net, lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2, x, torch.ones(2))
    tensor(15.)
    """
    with _eval(model, eval_mode):
        moments = _moments_by_hooks(model, loss_fn, inputs, targets, chunk_size, method)
        if moments is not None:
            return moments[0]
        total: Tensor | None = None
        count = 0
        for g in _grad_chunks(model, loss_fn, inputs, targets, chunk_size):
            g = g.to(torch.promote_types(g.dtype, torch.float32))
            s = g.square().sum()
            total = s if total is None else total + s
            count += g.shape[0]
    assert total is not None
    return total / count


def sgn_eigenvectors(grads: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""The top ``k`` eigenpairs of :math:`V=\frac1nG_c^\top G_c` from the :math:`n\times n` Gram matrix.

    Book: chapter 2, "Spectra: more than the traces"; paper: §3.5.

    If :math:`\frac1nG_cG_c^\top a=\lambda a` with :math:`\|a\|=1`, then
    :math:`u=G_c^\top a/\sqrt{n\lambda}` is a unit eigenvector of :math:`V` with the same eigenvalue.

    Args:
        grads: per-sample gradients ``[n, P]``.
        k: how many pairs, ``1 <= k <= min(n, P)``; the eigenvalues must be positive (``k`` at most
            the rank of :math:`V`, which is at most ``n - 1``).

    Returns:
        ``(eigenvalues [k] descending, eigenvectors [k, P])``, rows unit-norm.

    Raises:
        ValueError: for a bad shape or ``k``, or a zero eigenvalue among the top ``k``.

    >>> vals, vecs = sgn_eigenvectors(torch.tensor([[2.0, 0.0], [-2.0, 0.0]]), 1)
    >>> vals, vecs.abs()
    (tensor([4.]), tensor([[1., 0.]]))
    """
    gc, k = _centred(grads, check_int("k", k))
    n = grads.shape[0]
    vals, vecs = torch.linalg.eigh(gc @ gc.T / n)
    vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
    if not bool((vals > vals[0] * torch.finfo(vals.dtype).eps * n).all()):
        raise ValueError(f"V has fewer than k={k} positive eigenvalues (its rank is at most n - 1 = {n - 1})")
    u = (gc.T @ vecs) / (n * vals).sqrt()
    return vals, u.T
