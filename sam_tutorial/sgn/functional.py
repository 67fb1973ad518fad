"""Models as pure functions of one flat parameter vector, for :mod:`torch.func` transforms.

The analysis modules (:mod:`~sam_tutorial.sgn.variance`, :mod:`~sam_tutorial.curvature`,
:mod:`~sam_tutorial.curvature.sharpness`) differentiate a model's loss with respect to its trainable
parameters
flattened in ``model.parameters()`` order. The functions here build that view with
:func:`torch.func.functional_call`, so the model itself is never modified, and a context manager
switches a model to eval mode (BatchNorm running statistics, no dropout) for a block.

>>> import torch
>>> net = torch.nn.Linear(2, 1)
>>> fn = functional_losses(net, lambda out, y: (out.squeeze(-1) - y) ** 2)
>>> w = flat_params(net)
>>> torch.allclose(fn(w, torch.ones(3, 2), torch.zeros(3)), (net(torch.ones(3, 2)).squeeze(-1)) ** 2)
True
"""


from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call

from sam_tutorial.config import Inputs, LossFn, as_tuple

__all__ = [
    "batchable", "call_loss", "check_independent", "check_per_sample", "eval_mode", "flat_params",
    "functional_losses", "functional_outputs",
]


def _trainable(model: nn.Module) -> list[tuple[str, Tensor]]:
    named: list[tuple[str, Tensor]] = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no parameter with requires_grad=True")
    return named


def flat_params(model: nn.Module) -> Tensor:
    """The trainable parameters of ``model`` as one detached vector, in ``parameters()`` order.

    Book: chapter 2, "Per-sample gradients".

    Args:
        model: any module; parameters with ``requires_grad=False`` are left out.

    Returns:
        Tensor of shape ``[P]`` in the promoted dtype of the parameters.

    >>> flat_params(torch.nn.Linear(3, 2)).shape
    torch.Size([8])
    """
    params = [p.detach() for _, p in _trainable(model)]
    dtype = params[0].dtype
    for p in params[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    return torch.cat([p.reshape(-1).to(dtype) for p in params])


@contextmanager
def eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (BatchNorm uses running statistics, dropout off) for a block.

    Book: chapter 2, "Per-sample gradients".

    Every module's ``training`` flag is restored on exit. With ``enabled=False`` nothing changes.

    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train()
    >>> with eval_mode(net):
    ...     net[1].training
    False
    >>> net[1].training
    True
    """
    flags = [(m, m.training) for m in model.modules()]
    if enabled:
        model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def functional_outputs(model: nn.Module) -> Callable[[Tensor, Inputs], Tensor]:
    """A pure function ``(w, inputs) -> outputs`` of the flat trainable parameters ``w``.

    Book: chapter 2, "Per-sample gradients".

    The function calls the model through :func:`torch.func.functional_call`, so it composes with
    ``grad``, ``jvp`` and ``vmap``; the model's own parameters are never modified. The modules'
    ``training`` flags are read when the function is called; if any module is training, buffers are
    cloned on every call, so BatchNorm running statistics of ``model`` are never updated through it.

    Args:
        model: the network.

    Returns:
        ``fn(w, inputs)`` with ``w`` of shape ``[P]`` (see :func:`flat_params`).

    >>> net = torch.nn.Linear(2, 1)
    >>> fn = functional_outputs(net)
    >>> torch.allclose(fn(flat_params(net), torch.ones(4, 2)), net(torch.ones(4, 2)))
    True
    """
    named = _trainable(model)
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    dtypes = [p.dtype for _, p in named]
    sizes = [p.numel() for _, p in named]
    trainable = set(names)
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in trainable}
    buffers = dict(model.named_buffers())

    def fn(w: Tensor, inputs: Inputs) -> Tensor:
        parts = torch.split(w, sizes)
        params = {n: t.view(s).to(d) for n, t, s, d in zip(names, parts, shapes, dtypes, strict=True)}
        # Training-mode BatchNorm updates its running statistics in place: give it fresh copies made
        # inside the (possibly transformed) call, which torch.func allows to be mutated.
        training = any(m.training for m in model.modules())
        bufs = {n: b.clone() for n, b in buffers.items()} if training else buffers
        return functional_call(model, (params, frozen, bufs), as_tuple(inputs))

    return fn


_CALL_ERRORS = (RuntimeError, IndexError, TypeError, AssertionError)
"""What torch raises for inputs or targets that do not suit the model or the loss (shapes, dtypes,
class indices out of range; under ``vmap`` some decompositions assert); re-raised as ``ValueError``
with the shapes and dtypes."""


def _describe(*tensors: object) -> str:
    return ", ".join(f"{t.dtype} {list(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
                     for t in tensors)


def call_loss(
    loss_fn: LossFn, forward: Callable[[], Tensor], inputs: tuple[Tensor, ...], targets: Tensor
) -> Tensor:
    """``loss_fn(forward(), targets)``; what torch raises for inputs the model cannot take, or targets
    that do not suit the loss (a float or ``[B, 1]`` target for cross-entropy, a class index out of
    range), comes back as a ``ValueError`` naming the shapes and dtypes.

    Book: chapter 2, "Per-sample gradients".
    """
    try:
        out = forward()
    except _CALL_ERRORS as err:
        raise ValueError(f"model failed on inputs {_describe(*inputs)} ({type(err).__name__}: {err}); "
                         "inputs must have the shape and dtype the model takes") from err
    try:
        return loss_fn(out, targets)
    except _CALL_ERRORS as err:
        classes = out.shape[-1] if isinstance(out, Tensor) and out.dim() else "C"
        raise ValueError(
            f"loss_fn failed on outputs {_describe(out)} and targets {_describe(targets)} "
            f"({type(err).__name__}: {err}); targets must suit loss_fn, e.g. int64 class indices in "
            f"[0, {classes}) of shape [B] for cross-entropy"
        ) from err


def functional_losses(model: nn.Module, loss_fn: LossFn) -> Callable[[Tensor, Inputs, Tensor], Tensor]:
    """A pure function ``(w, inputs, targets) -> per-sample losses [B]`` of the flat parameters.

    Book: chapter 2, "Per-sample gradients".

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets)`` returning per-sample losses, shape ``[B]``.

    Returns:
        ``fn(w, inputs, targets)``; it raises ``ValueError`` if ``loss_fn`` does not return shape
        ``[B]`` (e.g. a loss with ``reduction="mean"``).

    >>> net = torch.nn.Linear(2, 1)
    >>> fn = functional_losses(net, lambda out, y: (out.squeeze(-1) - y) ** 2)
    >>> fn(flat_params(net), torch.ones(4, 2), torch.zeros(4)).shape
    torch.Size([4])
    """
    outputs = functional_outputs(model)

    def fn(w: Tensor, inputs: Inputs, targets: Tensor) -> Tensor:
        inputs = as_tuple(inputs)
        losses = call_loss(loss_fn, lambda: outputs(w, inputs), inputs, targets)
        if losses.shape != (inputs[0].shape[0],):
            raise ValueError(
                f"loss_fn must return per-sample losses of shape [B]=[{inputs[0].shape[0]}] "
                f"(e.g. reduction='none'); got shape {tuple(losses.shape)}"
            )
        return losses

    return fn


def batchable(model: nn.Module) -> bool:
    """Whether ``vmap`` can run the model: not while a BatchNorm uses batch statistics, since it then
    writes its (cloned) running buffers in place, which ``vmap`` cannot do with batched tangents; the
    callers fall back to a loop over vectors then.

    Book: chapter 2, "Per-sample gradients".

    >>> batchable(nn.Linear(2, 2)), batchable(nn.BatchNorm1d(2).train())
    (True, False)
    """
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def check_per_sample(model: nn.Module, what: str) -> None:
    """Refuse a model with a BatchNorm layer in training mode for a per-sample quantity ``what``.

    Book: chapter 2, "Per-sample gradients".

    In training mode BatchNorm normalises by the statistics of the batch it is given, which couples the
    samples: the gradient of one sample's loss alone is then not defined (BatchNorm1d refuses a batch
    of one, BatchNorm2d normalises one image by itself). The callers' ``eval_mode=True`` default uses
    the running statistics instead.

    Raises:
        ValueError: naming ``what``, the layer, and the two ways out.

    >>> check_per_sample(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).eval(), "trace_V")
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"{what}: the model's BatchNorm layer {name or type(module).__name__!r} is in training mode, "
                "where per-sample gradients are not defined (batch statistics couple the samples); pass "
                "eval_mode=True (the default) or call model.eval() first"
            )


def check_independent(model: nn.Module, loss_fn: LossFn, inputs: tuple[Tensor, ...], targets: Tensor,
                      what: str) -> None:
    """Refuse a model whose loss on one sample depends on the other samples of the batch.

    Book: chapter 2, "Per-sample gradients".

    Per-sample gradients (and so :math:`\\operatorname{tr}V`, the batch law of the gradient, the
    per-sample norms) assume :math:`f_i` depends on sample :math:`i` only. BatchNorm in training mode,
    a normalisation over the batch dimension, or attention across samples break that; both routes
    would then compute something else, silently. The test: the loss of sample 0 in the batch
    ``[x_0, x_1]`` and in ``[x_0, x_2]`` (``x_0`` for a batch of two) must agree, with the same random
    state (dropout masks) for both forwards. The model's parameters, buffers and the global random
    state are left as they were.

    Raises:
        ValueError: naming ``what`` and what to do.

    >>> net = torch.nn.Linear(2, 2)
    >>> ce = lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none")
    >>> check_independent(net, ce, (torch.randn(3, 2),), torch.zeros(3, dtype=torch.long), "trace_V")
    """
    batch = inputs[0].shape[0]
    if batch < 2:
        return
    pairs = [(0, 1), (0, 2 if batch > 2 else 0)]
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    devices = [t.device for t in inputs if t.device.type == "cuda"][:1]
    losses = []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for pair in pairs:
                torch.manual_seed(0)  # the same dropout masks for both forwards
                index = torch.tensor(pair, device=inputs[0].device)
                xs = tuple(t.index_select(0, index) for t in inputs)
                ys = targets.index_select(0, index.to(targets.device))
                out = loss_fn(model(*xs), ys)
                if not isinstance(out, Tensor) or out.shape != (2,):
                    return  # not per-sample losses: the caller says so, with the shapes
                losses.append(out[0].double())
    except (*_CALL_ERRORS, ValueError):
        return  # the caller's own forward on the whole batch reports what does not fit, with its shapes
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(saved[n])
    a, b = losses
    tol = 1e-3 if a.dtype != torch.float64 else 1e-9
    scale = max(abs(float(a)), abs(float(b)), 1.0)
    if not (abs(float(a) - float(b)) <= tol * scale) and math.isfinite(float(a) - float(b)):
        raise ValueError(
            f"{what}: the model mixes samples across the batch (the loss of sample 0 is {float(a):.6g} "
            f"next to sample 1 and {float(b):.6g} next to sample {pairs[1][1]}), e.g. BatchNorm in training "
            "mode or a normalisation over the batch dimension; per-sample gradients are then not defined. "
            "Put such layers in eval mode (eval_mode=True, the default, does it for BatchNorm and dropout) "
            "or use a per-sample normalisation (GroupNorm, LayerNorm)"
        )
