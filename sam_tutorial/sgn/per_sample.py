r"""Per-sample gradients :math:`\nabla f_i(x)`, the raw material of stochastic gradient noise (SGN).

Per-sample gradients come from :mod:`torch.func` (``vmap(grad(...))``) in chunks, flattened in
``model.parameters()`` order over the parameters that require grad. ``loss_fn(outputs, targets)``
returns per-sample losses of shape ``[B]``. Everything stays on the model's device; nothing calls
``.item()``.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> model = torch.nn.Linear(3, 2)
>>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
>>> per_sample_grads(model, torch.nn.CrossEntropyLoss(reduction="none"), x, y).shape
torch.Size([8, 8])
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from sam_tutorial.config import Inputs, LossFn, as_tuple, check_batch, check_int
from sam_tutorial.sgn.functional import check_independent, check_per_sample, flat_params, functional_losses
from sam_tutorial.sgn.functional import eval_mode as _eval  # functions here take a keyword `eval_mode`

__all__ = ["per_sample_grads"]


# Per-sample gradient chunks hold at most this many numbers (16 MiB in float64): trace_V over a large
# set never materialises the whole B x P matrix, and small chunks measured 3x faster than 2**24.
_CHUNK_NUMBERS = 2**21


def _chunk_size(chunk_size: int | None, batch_size: int, numel: int) -> int:
    if chunk_size is None:
        return max(1, min(batch_size, _CHUNK_NUMBERS // max(numel, 1)))
    return check_int("chunk_size", chunk_size)


def _grad_chunks(
    model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, chunk_size: int | None
) -> Iterator[Tensor]:
    """Yield per-sample gradients ``[c, P]`` chunk by chunk (call inside an eval-mode block)."""
    inputs = as_tuple(inputs)
    batch = check_batch(inputs, targets)
    check_per_sample(model, "per-sample gradients")
    check_independent(model, loss_fn, inputs, targets, "per-sample gradients")
    fn = functional_losses(model, loss_fn)
    w = flat_params(model)
    step = _chunk_size(chunk_size, batch, w.numel())

    def one(w: Tensor, xs: tuple[Tensor, ...], y: Tensor) -> Tensor:
        return fn(w, tuple(t.unsqueeze(0) for t in xs), y.unsqueeze(0)).sum()

    # Dropout in training mode needs its own mask per sample.
    per_sample = vmap(grad(one), in_dims=(None, 0, 0), randomness="different")
    for start in range(0, batch, step):
        stop = min(start + step, batch)
        yield per_sample(w, tuple(t[start:stop] for t in inputs), targets[start:stop])


def per_sample_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    r"""Per-sample gradients :math:`\nabla f_i(x)` stacked as rows, shape ``[B, P]``.

    Book: chapter 2, "Per-sample gradients".

    Args:
        model: the network; its parameters and buffers are not modified.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        targets: targets with the batch on dim 0.
        chunk_size: samples per ``vmap`` call (``None``: as many as fit in about
            :math:`2^{21}` numbers).
        eval_mode: evaluate with the model in eval mode (BatchNorm running statistics, no dropout).
            Per-sample gradients through BatchNorm batch statistics are not defined, so keep the
            default for BatchNorm models.

    Returns:
        Tensor ``[B, P]``, columns in ``model.parameters()`` order (trainable parameters only).

    Raises:
        ValueError: if ``inputs`` and ``targets`` disagree on the batch size, ``loss_fn`` does not
            return shape ``[B]``, ``chunk_size < 1``, or a BatchNorm layer is in training mode with
            ``eval_mode=False``.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> with torch.no_grad():
    ...     _ = net.weight.zero_()
    >>> per_sample_grads(net, lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2, x, torch.ones(2))
    tensor([[-1., -2.],
            [-3., -4.]])
    """
    with _eval(model, eval_mode):
        return torch.cat(list(_grad_chunks(model, loss_fn, inputs, targets, chunk_size)))
