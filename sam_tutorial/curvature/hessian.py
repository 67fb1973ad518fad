r"""Curvature of the training loss :math:`f(x)=\frac1B\sum_i f_i(x)` over a given batch: Hessian-vector
products, the top of the Hessian spectrum (Lanczos) and the Hessian trace (Hutchinson).

Hessian-vector products are forward-over-reverse, :math:`Hv=\partial_t\nabla f(x+tv)|_{t=0}`
(``torch.func.jvp`` of ``torch.func.grad``), batched over probe vectors with ``vmap``. Unlike
PyHessian nothing calls ``.item()`` inside a loop: results stay on the model's device until the caller
reads them. Parameters are the trainable ones, flattened in ``model.parameters()`` order. BatchNorm
runs in eval mode by default (``eval_mode=False`` uses batch statistics; running statistics are never
updated).

>>> import torch
>>> net = torch.nn.Linear(2, 1, bias=False)
>>> mse = lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2
>>> x, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2)
>>> hessian_matrix(net, mse, x, y)          # (1/B) X^T X
tensor([[0.5000, 0.0000],
        [0.0000, 2.0000]])
>>> top_eigenvalues(net, mse, x, y, k=2).round(decimals=6)
tensor([2.0000, 0.5000])
>>> from sam_tutorial.curvature.hutchinson import hessian_trace
>>> hessian_trace(net, mse, x, y, n_probes=4)  # Rademacher probes: exact for a diagonal Hessian
tensor(2.5000)

References:
    Z. Yao, A. Gholami, K. Keutzer, M. Mahoney, *PyHessian: Neural Networks Through the Lens of the
    Hessian*, 2020. M. F. Hutchinson, *A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines*, 1990. C. Lanczos, 1950.
"""


from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from sam_tutorial.config import Inputs, LossFn, as_tuple, check_batch, check_float_dtype, check_int
from sam_tutorial.sgn.functional import batchable, flat_params, functional_losses
from sam_tutorial.sgn.functional import eval_mode as _eval  # functions here take a keyword `eval_mode`

__all__ = ["PROBES", "hessian_matrix", "hessian_vector_product", "lanczos", "top_eigenvalues"]


PROBES = ("rademacher", "gaussian")
"""Probe distributions for Hutchinson's estimator (both have :math:`\\mathbb E zz^\\top=I`)."""


def _mean_loss(
    model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor
) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    inputs = as_tuple(inputs)
    check_batch(inputs, targets)
    losses = functional_losses(model, loss_fn)
    return (lambda w: losses(w, inputs, targets).mean()), flat_params(model)


def _load_jvp_decompositions() -> None:
    # torch loads these on the first forward-mode AD call and warns from inside torch.jit.script;
    # the warning is torch's own business, not the caller's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import torch._decomp.decompositions_for_jvp  # noqa: F401
        except Exception:  # a private module: if it moves, torch loads what it needs itself
            pass


def _hvp_fn(f: Callable[[Tensor], Tensor], w: Tensor, batched: bool) -> Callable[[Tensor], Tensor]:
    """``V -> H V`` for a block of vectors ``V [k, P]`` (``vmap``) or a loop when not batchable."""
    _load_jvp_decompositions()
    g = grad(f)

    def one(v: Tensor) -> Tensor:
        return jvp(g, (w,), (v,))[1]

    if batched:
        return vmap(one)
    return lambda vs: torch.stack([one(v) for v in vs])


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    vectors: Tensor,
    *,
    eval_mode: bool = True,
) -> Tensor:
    r""":math:`Hv` for the Hessian :math:`H=\nabla^2 f` of the mean per-sample loss over the batch.

    Book: chapter 2, "Near a minimum"; paper: §3.5.

    Args:
        model: the network (not modified).
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        targets: targets with the batch on dim 0.
        vectors: ``[P]`` or a block ``[k, P]`` (one product per row, batched with ``vmap``).
        eval_mode: BatchNorm in eval mode, no dropout.

    Returns:
        Tensor of the shape of ``vectors``.

    Raises:
        ValueError: if ``vectors`` is not ``[P]`` or ``[k, P]``.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> mse = lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2
    >>> hessian_vector_product(net, mse, torch.tensor([[1.0, 1.0]]), torch.zeros(1), torch.ones(2))
    tensor([2., 2.])
    """
    with _eval(model, eval_mode):
        f, w = _mean_loss(model, loss_fn, inputs, targets)
        if vectors.shape[-1:] != w.shape or vectors.dim() not in (1, 2):
            raise ValueError(
                f"vectors must have shape [P] or [k, P] with P={w.numel()}; got {tuple(vectors.shape)}"
            )
        hvp = _hvp_fn(f, w, batchable(model))
        vs = vectors.to(w.dtype)
        return hvp(vs.unsqueeze(0))[0] if vectors.dim() == 1 else hvp(vs)


def hessian_matrix(
    model: nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Tensor, *, eval_mode: bool = True
) -> Tensor:
    r"""The explicit Hessian :math:`\nabla^2 f` ``[P, P]`` (for small models and toy problems).

    Book: chapter 2, "Near a minimum"; paper: §3.5.

    Built from :math:`P` batched Hessian-vector products with the unit vectors and symmetrised.

    Args:
        model: the network.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        targets: targets with the batch on dim 0.
        eval_mode: BatchNorm in eval mode, no dropout.

    >>> net = torch.nn.Linear(1, 1)
    >>> mse = lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2
    >>> hessian_matrix(net, mse, torch.tensor([[2.0]]), torch.zeros(1))
    tensor([[4., 2.],
            [2., 1.]])
    """
    p = flat_params(model)
    eye = torch.eye(p.numel(), dtype=p.dtype, device=p.device)
    h = hessian_vector_product(model, loss_fn, inputs, targets, eye, eval_mode=eval_mode)
    return 0.5 * (h + h.T)


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    n_iter: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Ritz values of a symmetric linear operator from ``n_iter`` Lanczos steps, ascending.

    Book: chapter 2, "Spectra: more than the traces"; paper: §3.5.

    Builds an orthonormal Krylov basis :math:`Q` with full re-orthogonalisation (two classical
    Gram-Schmidt passes a step) and returns the eigenvalues of the tridiagonal
    :math:`T=Q^\top A Q`. On breakdown (an invariant subspace found, :math:`\beta_j\approx0`) the
    next basis vector is a random vector orthogonal to :math:`Q`, selected with ``torch.where``, so
    the loop never reads a value back to the host. With ``n_iter == dim`` the Ritz values are the
    whole spectrum (up to rounding).

    Args:
        matvec: ``v -> A v`` on ``[dim]`` vectors.
        dim: the dimension of the operator.
        n_iter: Krylov dimension, ``1 <= n_iter <= dim``.
        generator: generator for the start and restart vectors (on ``device``).
        dtype: working dtype.
        device: working device.

    Returns:
        Tensor ``[n_iter]``, ascending.

    Raises:
        ValueError: if ``n_iter`` is not in ``[1, dim]``.

    >>> a = torch.diag(torch.tensor([3.0, 1.0, 2.0]))
    >>> lanczos(lambda v: a @ v, 3, 3).round(decimals=5)
    tensor([1., 2., 3.])
    """
    dim = check_int("dim", dim)
    n_iter = check_int("n_iter", n_iter)
    check_float_dtype("dtype", dtype)
    if n_iter > dim:
        raise ValueError(f"n_iter must be in [1, dim] = [1, {dim}], got {n_iter}")
    basis = torch.zeros(n_iter, dim, dtype=dtype, device=device)
    alpha = torch.zeros(n_iter, dtype=dtype, device=device)
    beta = torch.zeros(n_iter, dtype=dtype, device=device)
    eps = torch.finfo(dtype).eps

    def orthogonalise(v: Tensor, q: Tensor) -> Tensor:
        for _ in range(2):
            v = v - q.T @ (q @ v)
        return v

    def random_unit() -> Tensor:
        v = torch.randn(dim, dtype=dtype, device=device, generator=generator)
        return v / v.norm()

    basis[0] = random_unit()
    scale = torch.zeros((), dtype=dtype, device=device)
    for j in range(n_iter):
        w = matvec(basis[j]).to(dtype)
        alpha[j] = basis[j] @ w
        if j + 1 == n_iter:
            break
        q = basis[: j + 1]
        w = orthogonalise(w, q)
        b = w.norm()
        scale = torch.maximum(scale, alpha[j].abs() + b)
        restart = orthogonalise(random_unit(), q)
        # after two Gram-Schmidt passes a true breakdown leaves only rounding, O(eps * ||A||)
        ok = b > 64 * eps * scale
        basis[j + 1] = torch.where(ok, w / b.clamp_min(torch.finfo(dtype).tiny), restart / restart.norm())
        beta[j] = torch.where(ok, b, torch.zeros_like(b))
    off = beta[: n_iter - 1]
    tri = torch.diag(alpha) + torch.diag(off, 1) + torch.diag(off, -1)
    if not bool(torch.isfinite(tri).all()):  # eigvalsh would fail to converge or return NaN
        raise ValueError("lanczos: the operator returned non-finite values (NaN or inf in A v); for a "
                         "Hessian, the model's parameters, inputs or loss are non-finite at this point: "
                         "check them (e.g. torch.isfinite on the parameters) before asking for eigenvalues")
    return torch.linalg.eigvalsh(tri)


def top_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Tensor,
    k: int = 1,
    *,
    n_iter: int | None = None,
    seed: int = 0,
    eval_mode: bool = True,
) -> Tensor:
    r"""The ``k`` largest (algebraic) eigenvalues of the Hessian :math:`\nabla^2 f`, by Lanczos.

    Book: chapter 2, "Spectra: more than the traces"; paper: §3.5.

    Each Lanczos step costs one Hessian-vector product. Ritz values converge to the extreme
    eigenvalues first; the default Krylov dimension :math:`\min(P, \max(2k+30, 40))` is ample for
    well-separated top eigenvalues; raise ``n_iter`` for clustered spectra (``n_iter = P`` is exact).

    Args:
        model: the network.
        loss_fn: per-sample loss, ``loss_fn(outputs, targets) -> [B]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        targets: targets with the batch on dim 0.
        k: how many eigenvalues, ``1 <= k <= P``.
        n_iter: Krylov dimension (``k <= n_iter <= P``); ``None`` for the default above.
        seed: seed of the start vector.
        eval_mode: BatchNorm in eval mode, no dropout.

    Returns:
        Tensor ``[k]``, descending, on the model's device.

    Raises:
        ValueError: if ``k < 1``, ``k > P`` or ``n_iter`` is not in ``[k, P]``.

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> mse = lambda out, y: 0.5 * (out.squeeze(-1) - y) ** 2
    >>> top_eigenvalues(net, mse, torch.tensor([[1.0, 1.0]]), torch.zeros(1)).round(decimals=5)
    tensor([2.])
    """
    k = check_int("k", k)
    with _eval(model, eval_mode):
        f, w = _mean_loss(model, loss_fn, inputs, targets)
        dim = w.numel()
        if k > dim:
            raise ValueError(f"k must be in [1, P] = [1, {dim}], got {k}")
        steps = min(dim, max(2 * k + 30, 40)) if n_iter is None else n_iter
        if isinstance(steps, bool) or not isinstance(steps, int) or not k <= steps <= dim:
            raise ValueError(f"n_iter must be an integer in [k, P] = [{k}, {dim}], got {n_iter!r}")
        hvp = _hvp_fn(f, w, batched=False)
        generator = torch.Generator(device=w.device).manual_seed(seed)
        ritz = lanczos(
            lambda v: hvp(v.unsqueeze(0))[0],
            dim,
            steps,
            generator=generator,
            dtype=w.dtype,
            device=w.device,
        )
    return ritz.flip(0)[:k]
