r"""Per-sample gradient norms at the cost of one forward and one backward pass.

:math:`\operatorname{tr}V=\frac1n\sum_i\|\nabla f_i\|^2-\|\nabla f\|^2` needs only the *norms* of the
per-sample gradients, and for the layers deep nets are made of those norms follow from quantities the
ordinary backward pass already has (Goodfellow, 2015; the BackPACK "batch_l2" extension):

* ``Linear`` with input :math:`a_i` and output gradient :math:`\delta_i` (per sample):
  :math:`\|\nabla_W f_i\|^2=\|a_i\|^2\|\delta_i\|^2`; with extra (sequence) dims
  :math:`\|\nabla_W f_i\|^2=\sum_{t,t'}(a_{it}\cdot a_{it'})(\delta_{it}\cdot\delta_{it'})`.
* ``Conv1d``/``Conv2d``: the same with the unfolded input patches, choosing per layer between this
  Gram form and forming :math:`\delta_i U_i^\top` (whichever needs fewer operations).
* ``BatchNorm`` (eval mode), ``GroupNorm``, ``LayerNorm`` affine parameters:
  :math:`\nabla_\gamma f_i=\sum_{\text{positions}}\delta_i\odot\hat x_i`,
  :math:`\nabla_\beta f_i=\sum\delta_i`, with :math:`\hat x` the normalised input.

Models with any other parameterised module, a parameter read twice in one forward pass (a module
called twice, tied weights, a weight reused outside its module: detected by counting the parameter's
uses in the autograd graph), or a model that mixes samples across the batch (BatchNorm in training
mode; detected by :func:`sam_tutorial.sgn.functional.check_independent`) are not supported here;
:func:`sam_tutorial.sgn.variance.trace_V` then falls back to :func:`torch.func.vmap`.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
>>> supports_fast_norms(net)
True
>>> sq, mean_grad = per_sample_sq_norms(
...     net, torch.nn.CrossEntropyLoss(reduction="none"), torch.randn(5, 3), torch.zeros(5).long())
>>> sq.shape, mean_grad.shape
(torch.Size([5]), torch.Size([26]))

References:
    I. Goodfellow, *Efficient Per-Example Gradient Computations*, arXiv:1510.01799, 2015.
    F. Dangel, F. Kunstner, P. Hennig, *BackPACK: Packing more into backprop*, ICLR 2020.
"""


from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam_tutorial.config import check_batch
from sam_tutorial.sgn.functional import call_loss, check_independent

__all__ = ["ModuleReusedError", "per_sample_sq_norms", "supports_fast_norms"]


class ModuleReusedError(ValueError):
    """A parameter is read more than once in one forward pass: a module with parameters ran twice, or a
    weight is tied to another layer or reused outside its module (weight sharing).

    Book: chapter 2, "Per-sample gradients".
    """


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, *_NORMS)


# Conv layers materialise per-sample weight gradients in pieces of at most this many numbers.
_CHUNK_NUMBERS = 2**24


def _conv_geometry(module: nn.Conv1d | nn.Conv2d) -> tuple[tuple[int, ...], ...] | None:
    """Kernel, dilation, padding and stride as 2-D tuples for ``F.unfold``; ``None`` if unsupported."""
    if module.groups != 1 or module.padding_mode != "zeros":
        return None
    kernel, dilation, stride = module.kernel_size, module.dilation, module.stride
    padding = module.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * len(kernel)
        else:  # "same": symmetric only when every d(k-1) is even
            total = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
            if any(t % 2 for t in total):
                return None
            padding = tuple(t // 2 for t in total)
    if isinstance(module, nn.Conv1d):
        return (1, *kernel), (1, *dilation), (0, *padding), (1, *stride)
    return tuple(kernel), tuple(dilation), tuple(padding), tuple(stride)


def _module_ok(module: nn.Module) -> bool:
    if not isinstance(module, _SUPPORTED):
        return False
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return not module.training and module.track_running_stats
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return _conv_geometry(module) is not None
    return True


def supports_fast_norms(model: nn.Module) -> bool:
    """Whether :func:`per_sample_sq_norms` can handle ``model`` in its current train/eval state.

    Book: chapter 2, "Per-sample gradients".

    Every trainable parameter must belong directly to a ``Linear``, ``Conv1d``/``Conv2d``
    (``groups=1``, zero padding), eval-mode ``BatchNorm``, ``GroupNorm`` or ``LayerNorm``, and no
    parameter may be shared between modules.

    >>> supports_fast_norms(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Embedding(3, 2)))
    False
    """
    owners: dict[int, int] = {}
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and not _module_ok(module):
            return False
        for p in own:
            owners[id(p)] = owners.get(id(p), 0) + 1
    trainable = [p for p in model.parameters() if p.requires_grad]
    return bool(trainable) and all(owners.get(id(p)) == 1 for p in trainable)


def _pairwise_sq(a: Tensor, d: Tensor) -> Tensor:
    r""":math:`\|d_i^\top a_i\|_F^2` for ``a [B, T, p]`` and ``d [B, T, q]``, the cheaper way."""
    b, t, p = a.shape
    q = d.shape[-1]
    if t == 1:
        return a.square().sum((1, 2)) * d.square().sum((1, 2))
    if t * (p + q) <= p * q:
        return ((a @ a.transpose(1, 2)) * (d @ d.transpose(1, 2))).sum((1, 2))
    step = max(1, _CHUNK_NUMBERS // (p * q))
    return torch.cat(
        [(d[s : s + step].transpose(1, 2) @ a[s : s + step]).square().sum((1, 2)) for s in range(0, b, step)]
    )


def _module_sq_norms(module: nn.Module, x: Tensor, d: Tensor) -> Tensor:
    """Per-sample squared gradient norm of ``module``'s own trainable parameters."""
    batch = x.shape[0]
    weight, bias = module.weight, getattr(module, "bias", None)
    want_w = weight is not None and weight.requires_grad
    want_b = bias is not None and bias.requires_grad
    total = torch.zeros(batch, dtype=d.dtype, device=d.device)
    if isinstance(module, nn.Linear):
        a, g = x.reshape(batch, -1, x.shape[-1]), d.reshape(batch, -1, d.shape[-1])
        if want_w:
            total = total + _pairwise_sq(a, g)
        if want_b:
            total = total + g.sum(1).square().sum(-1)
        return total
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        kernel, dilation, padding, stride = _conv_geometry(module)  # type: ignore[misc]
        g = d.reshape(batch, d.shape[1], -1)  # [B, C_out, T]
        if want_w:
            x2 = x.unsqueeze(2) if isinstance(module, nn.Conv1d) else x
            patches = F.unfold(x2, kernel, dilation=dilation, padding=padding, stride=stride)
            total = total + _pairwise_sq(patches.transpose(1, 2), g.transpose(1, 2))
        if want_b:
            total = total + g.sum(-1).square().sum(-1)
        return total
    # Normalisation layers: gradients of the affine parameters are sums of delta * x_hat.
    if isinstance(module, nn.LayerNorm):
        x_hat = F.layer_norm(x, module.normalized_shape, eps=module.eps)
        lead = x.dim() - len(module.normalized_shape)
        dims = tuple(range(1, lead))
    else:
        if isinstance(module, nn.GroupNorm):
            x_hat = F.group_norm(x, module.num_groups, eps=module.eps)
        else:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            assert isinstance(module, nn.modules.batchnorm._BatchNorm)  # eval mode: running statistics
            running_mean, running_var = module.running_mean, module.running_var
            assert running_mean is not None and running_var is not None
            mean = running_mean.view(shape)
            var = running_var.view(shape)
            x_hat = (x - mean) / torch.sqrt(var + module.eps)
        dims = tuple(range(2, x.dim()))
    if want_w:
        gw = (d * x_hat).sum(dims) if dims else d * x_hat
        total = total + gw.reshape(batch, -1).square().sum(-1)
    if want_b:
        gb = d.sum(dims) if dims else d
        total = total + gb.reshape(batch, -1).square().sum(-1)
    return total


def _parameter_uses(root: Tensor, params: list[Tensor]) -> dict[int, int]:
    """How many operations of ``root``'s autograd graph read each parameter (by ``id``)."""
    count = {id(p): 0 for p in params}
    seen: set[Any] = set()
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is None:
                continue
            leaf = getattr(child, "variable", None)  # an AccumulateGrad node: the parameter itself
            if leaf is None:
                stack.append(child)
            elif id(leaf) in count:
                count[id(leaf)] += 1
    return count


def _check_single_use(model: nn.Module, losses: Tensor, params: list[Tensor]) -> None:
    """Refuse (``ModuleReusedError``) parameters that the forward pass (or the loss) reads more than once:
    tied weights, a module called twice, a layer's weight reused by a functional call or a penalty in the
    loss. The hooks see one use per module, so the norms would miss the other uses' terms (27 % low on
    a tied MLP); :func:`sam_tutorial.sgn.variance.trace_V` falls back to the exact vmap route."""
    uses = _parameter_uses(losses, params)
    names = {id(p): n for n, p in model.named_parameters()}
    reused = [f"{names.get(i, '?')} ({k} uses)" for i, k in uses.items() if k > 1]
    if reused:
        raise ModuleReusedError(
            f"per_sample_sq_norms: parameter(s) {', '.join(reused)} are read more than once in the forward "
            "pass or the loss (tied weights, a module called twice, a weight reused outside its module); "
            "the hooks route would miss the cross terms; use the vmap route (trace_V(method='vmap'), which "
            "method='auto' picks, or sam_tutorial.sgn.per_sample.per_sample_grads)"
        )


def per_sample_sq_norms(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    targets: Tensor,
) -> tuple[Tensor, Tensor]:
    r"""Squared per-sample gradient norms :math:`\|\nabla f_i\|^2` and the mean gradient
    :math:`\nabla f=\frac1B\sum_i\nabla f_i`, from one forward and one backward pass.

    Book: chapter 2, "Per-sample gradients".

    The model is run as it is (call inside :func:`sam_tutorial.sgn.functional.eval_mode` for BatchNorm);
    gradients are taken with :func:`torch.autograd.grad`, so ``.grad`` fields are left untouched.

    Args:
        model: a model for which :func:`supports_fast_norms` is true.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        targets: targets with the batch on dim 0.

    Returns:
        ``(sq_norms [B], mean_grad [P])``, the mean gradient flattened in ``model.parameters()`` order
        (trainable parameters only), both in at least float32.

    Raises:
        ValueError: if the model is not supported or ``loss_fn`` does not return shape ``[B]``.
        ModuleReusedError: if a module with parameters runs more than once in the forward pass.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = net.weight.zero_()
    >>> sq, g = per_sample_sq_norms(net, lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2,
    ...                             torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.ones(2))
    >>> sq, g
    (tensor([ 5., 25.]), tensor([-2., -3.]))
    """
    if not supports_fast_norms(model):
        raise ValueError(
            "model is not supported by per_sample_sq_norms: every trainable parameter must belong "
            "to a Linear, Conv1d/Conv2d (groups=1, zero padding), eval-mode BatchNorm, GroupNorm or "
            "LayerNorm; use the vmap route (sam_tutorial.sgn.per_sample.per_sample_grads) instead"
        )
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    check_batch(inputs, targets)
    check_independent(model, loss_fn, inputs, targets, "per_sample_sq_norms")
    return _sq_norms(model, loss_fn, inputs, targets)


def _sq_norms(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: tuple[Tensor, ...], targets: Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`per_sample_sq_norms` after its checks of the model and the batch (callers that split one
    batch into chunks check the whole batch once, then call this per chunk)."""
    batch = inputs[0].shape[0]
    records: list[tuple[nn.Module, Tensor, Tensor]] = []

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        records.append((module, args[0].detach(), output))

    hooked = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    handles = [m.register_forward_hook(hook) for m in hooked]
    try:
        with torch.enable_grad():
            losses = call_loss(loss_fn, lambda: model(*inputs), inputs, targets)
    finally:
        for h in handles:
            h.remove()
    if losses.shape != (batch,):
        raise ValueError(
            f"loss_fn must return per-sample losses of shape [B]=[{batch}] (e.g. reduction='none'); "
            f"got shape {tuple(losses.shape)}"
        )
    params: list[Tensor] = [p for p in model.parameters() if p.requires_grad]
    _check_single_use(model, losses, params)
    outs: list[Tensor] = [out for _, _, out in records]
    grads = torch.autograd.grad(losses.sum(), outs + params, allow_unused=True)
    acc = torch.promote_types(losses.dtype, torch.float32)
    sq = torch.zeros(batch, dtype=acc, device=losses.device)
    for (module, x, _), d in zip(records, grads[: len(outs)], strict=True):
        if d is not None:
            sq = sq + _module_sq_norms(module, x.to(acc), d.to(acc))
    mean_grad = torch.cat(
        [
            (torch.zeros_like(p, dtype=acc) if g is None else g.to(acc)).reshape(-1)
            for p, g in zip(params, grads[len(outs) :], strict=True)
        ]
    )
    return sq, mean_grad / batch
