r"""Hutchinson's estimator of the Hessian trace, :math:`\operatorname{tr}H=\mathbb E[z^\top Hz]`
for probes with :math:`\mathbb E[zz^\top]=I`, and the variance of one probe (claim C9): for a symmetric
matrix :math:`A`, Rademacher probes give :math:`2\sum_{i\ne j}A_{ij}^2` and Gaussian probes
:math:`2\|A\|_F^2`.

The same two probe kinds drive RW-SAM's finite-difference scores (:mod:`sam_tutorial.optim.rwsam`).

>>> import torch
>>> probe_variance(torch.diag(torch.tensor([1.0, 2.0])))   # diagonal: Rademacher is exact
tensor(0.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sam_tutorial.config import Inputs, LossFn, check_float_dtype, check_int, check_tensor
from sam_tutorial.curvature.hessian import PROBES, _hvp_fn, _mean_loss
from sam_tutorial.sgn.functional import batchable
from sam_tutorial.sgn.functional import eval_mode as _eval  # functions here take a keyword `eval_mode`

__all__ = ["hessian_trace", "hutchinson_samples", "make_probes", "probe_variance"]


def make_probes(
    n: int,
    dim: int,
    *,
    kind: str = "rademacher",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""``n`` random probe vectors with :math:`\mathbb E zz^\top=I`, shape ``[n, dim]``.

    Book: chapter 2, "Near a minimum"; paper: §3.5.

    Args:
        n: number of probes.
        dim: their dimension.
        kind: ``"rademacher"`` (entries :math:`\pm1`) or ``"gaussian"`` (standard normal).
        generator: generator on ``device``.
        dtype: dtype of the probes.
        device: where to draw them.

    Raises:
        ValueError: for ``n < 1``, ``dim < 1`` or an unknown ``kind``.

    >>> make_probes(2, 3, generator=torch.Generator().manual_seed(0)).abs()
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
    """
    n, dim = check_int("n", n), check_int("dim", dim)
    check_float_dtype("dtype", dtype)
    if kind == "rademacher":
        bits = torch.randint(0, 2, (n, dim), generator=generator, device=device)
        return (2 * bits - 1).to(dtype)
    if kind == "gaussian":
        return torch.randn(n, dim, generator=generator, dtype=dtype, device=device)
    raise ValueError(f"kind must be one of {', '.join(map(repr, PROBES))}; got {kind!r}")


def probe_variance(matrix: Tensor, *, kind: str = "rademacher") -> Tensor:
    r"""The variance of one Hutchinson sample :math:`z^\top Az` (closed form, claim C9).

    Book: chapter 5, "The estimator"; paper: claim C9.

    For symmetric :math:`A`: :math:`2(\|A\|_F^2-\sum_j A_{jj}^2)` with Rademacher probes and
    :math:`2\|A\|_F^2` with Gaussian ones. A non-symmetric :math:`A` is replaced by its symmetric
    part, which has the same quadratic form. With :math:`A=gg^\top` the sample
    :math:`(z^\top g)^2` estimates :math:`\|g\|^2` (RW-SAM's probe, paper §5.3) with variance
    :math:`2(\|g\|^4-\sum_j g_j^4)` versus :math:`2\|g\|^4`.

    Args:
        matrix: a square matrix ``[P, P]``.
        kind: ``"rademacher"`` or ``"gaussian"``.

    Raises:
        ValueError: if ``matrix`` is not square or ``kind`` is unknown.

    >>> g = torch.tensor([1.0, 2.0])
    >>> probe_variance(torch.outer(g, g)), probe_variance(torch.outer(g, g), kind="gaussian")
    (tensor(16.), tensor(50.))
    """
    check_tensor("matrix", matrix, floating=True, finite=True)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square [P, P], got {tuple(matrix.shape)}")
    sym = 0.5 * (matrix + matrix.T)
    frob = sym.square().sum()
    if kind == "rademacher":
        return 2 * (frob - sym.diagonal().square().sum())
    if kind == "gaussian":
        return 2 * frob
    raise ValueError(f"kind must be one of {', '.join(map(repr, PROBES))}; got {kind!r}")


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    n_probes: int = 100,
    probe: str = "rademacher",
    block_size: int = 16,
    seed: int = 0,
    eval_mode: bool = True,
) -> Tensor:
    r"""Hutchinson's estimate :math:`\frac1N\sum_{s=1}^N z_s^\top\nabla^2 f\,z_s` of
    :math:`\operatorname{tr}\nabla^2 f`.

    Book: chapter 2, "Near a minimum"; paper: §3.5.

    Unbiased for either probe; its variance is :func:`probe_variance` of the Hessian divided by
    ``n_probes`` (zero for a diagonal Hessian with Rademacher probes). Probes are processed in blocks
    of ``block_size`` Hessian-vector products batched with ``vmap``; the running sum stays on the
    device.

    Args:
        model: the network.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        targets: targets with the batch on dim 0.
        n_probes: number of probes :math:`N \ge 1`.
        probe: ``"rademacher"`` or ``"gaussian"``.
        block_size: probes per batched product.
        seed: seed of the probe generator (on the model's device).
        eval_mode: BatchNorm in eval mode, no dropout.

    Returns:
        0-d tensor on the model's device.

    Raises:
        ValueError: if ``n_probes < 1``, ``block_size < 1`` or ``probe`` is unknown.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> mse = lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2
    >>> hessian_trace(net, mse, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2), n_probes=1)
    tensor(1.)
    """
    return hutchinson_samples(
        model, loss_fn, inputs, targets, n_probes=n_probes, probe=probe, block_size=block_size, seed=seed,
        eval_mode=eval_mode,
    ).mean()


# Same signature as hessian_trace on purpose: hessian_trace is this function's mean.
def hutchinson_samples(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    *,
    n_probes: int = 100,
    probe: str = "rademacher",
    block_size: int = 16,
    seed: int = 0,
    eval_mode: bool = True,
) -> Tensor:
    r"""The per-probe values :math:`z_s^\top\nabla^2 f\,z_s`, shape ``[n_probes]``, whose mean is
    :func:`hessian_trace` (and whose standard deviation over :math:`\sqrt N` is its standard error).

    Book: chapter 2, "Near a minimum"; paper: §3.5.

    Arguments and errors as :func:`hessian_trace`.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> mse = lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2
    >>> hutchinson_samples(net, mse, torch.eye(2), torch.zeros(2), n_probes=3)
    tensor([1., 1., 1.])
    """
    n_probes = check_int("n_probes", n_probes)
    block_size = check_int("block_size", block_size)
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {', '.join(map(repr, PROBES))}; got {probe!r}")
    with _eval(model, eval_mode):
        f, w = _mean_loss(model, loss_fn, inputs, targets)
        hvp = _hvp_fn(f, w, batchable(model))
        generator = torch.Generator(device=w.device).manual_seed(seed)
        values = []
        for start in range(0, n_probes, block_size):
            count = min(block_size, n_probes - start)
            z = make_probes(count, w.numel(), kind=probe, generator=generator, dtype=w.dtype, device=w.device)
            values.append((z * hvp(z)).sum(1))
    return torch.cat(values)
