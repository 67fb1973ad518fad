r"""The true Fisher information trace, labels drawn from the model's own predictive distribution
(paper §3.5): :math:`\operatorname{tr}F = \mathbb E_x\mathbb E_{\hat y\sim p_x}\|\nabla\ell(x,\hat
y)\|^2`.

Near a minimum of a log-loss the paper argues :math:`V\approx F\approx\nabla^2 f`; chapter 2 shows
where that chain holds and where it fails (at an interpolating minimum :math:`V\to 0` while
:math:`F` does not). The empirical Fisher is :func:`sam_tutorial.sgn.variance.empirical_fisher_trace`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import jacrev, vmap

from sam_tutorial.config import Inputs, as_tuple, check_batch, check_int
from sam_tutorial.sgn.functional import check_per_sample, flat_params, functional_outputs
from sam_tutorial.sgn.functional import eval_mode as _eval  # functions here take a keyword `eval_mode`
from sam_tutorial.sgn.per_sample import _chunk_size

__all__ = ["fisher_trace", "sample_model_labels"]


def fisher_trace(
    model: nn.Module,
    inputs: Inputs,
    *,
    n_label_samples: int | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    r"""The trace of the true Fisher of a softmax classifier,
    :math:`\operatorname{tr}F=\frac1n\sum_i\sum_c p_c(x_i)\,\|\nabla\log p_c(x_i)\|^2`.

    Book: chapter 2, "Near a minimum"; paper: §3.5.

    The model must return logits ``[B, C]``. Labels are drawn from the model's own predictive
    distribution, not taken from the data (that is
    :func:`~sam_tutorial.sgn.variance.empirical_fisher_trace`). For a linear
    softmax model :math:`F` equals the Hessian of the mean cross-entropy.

    Args:
        model: a classifier returning logits ``[B, C]``.
        inputs: a tensor or tuple of tensors with the batch on dim 0.
        n_label_samples: ``None`` sums over all ``C`` classes exactly (cost ``C`` per-sample
            gradients per sample); an integer ``k`` averages over ``k`` labels sampled from
            :math:`p(\cdot\mid x_i)` instead (cost ``k``).
        generator: generator for the sampled labels, on the model's device.
        chunk_size: samples per chunk (``None``: automatic).
        eval_mode: evaluate in eval mode.

    Returns:
        0-d tensor.

    Raises:
        ValueError: if the outputs are not ``[B, C]`` logits or ``n_label_samples < 1``.

    >>> net = torch.nn.Linear(3, 4)
    >>> bool(fisher_trace(net, torch.randn(5, 3)) > 0)
    True
    """
    if n_label_samples is not None:
        check_int("n_label_samples", n_label_samples)
    inputs = as_tuple(inputs)
    batch = check_batch(inputs)
    with _eval(model, eval_mode):
        check_per_sample(model, "fisher_trace")
        outputs = functional_outputs(model)
        w = flat_params(model)
        with torch.no_grad():
            logits = outputs(w, inputs)
        if logits.dim() != 2 or logits.shape[0] != batch:
            raise ValueError(f"model must return logits of shape [B, C]; got {tuple(logits.shape)}")
        classes = logits.shape[1]
        probs = logits.softmax(-1).to(torch.promote_types(logits.dtype, torch.float32))
        if n_label_samples is None:
            labels = torch.arange(classes, device=logits.device).expand(batch, classes)
            weights = probs
        else:
            labels = torch.multinomial(probs, n_label_samples, replacement=True, generator=generator)
            weights = torch.full_like(labels, 1.0 / n_label_samples, dtype=probs.dtype)
        per_label = labels.shape[1]
        step = _chunk_size(chunk_size, batch, w.numel() * per_label)

        def log_lik(w: Tensor, xs: tuple[Tensor, ...], ys: Tensor) -> Tensor:
            log_p = outputs(w, tuple(t.unsqueeze(0) for t in xs)).log_softmax(-1)[0]
            return log_p[ys]

        per_sample = vmap(jacrev(log_lik), in_dims=(None, 0, 0), randomness="different")
        total = torch.zeros((), dtype=probs.dtype, device=logits.device)
        for start in range(0, batch, step):
            stop = min(start + step, batch)
            jac = per_sample(w, tuple(t[start:stop] for t in inputs), labels[start:stop])
            total = total + (weights[start:stop] * jac.to(probs.dtype).square().sum(-1)).sum()
    return total / batch


def sample_model_labels(
    model: nn.Module, inputs: Inputs, *, generator: torch.Generator | None = None, batch_size: int = 4096
) -> Tensor:
    r"""One label per sample drawn from the model's own predictive distribution
    :math:`y_i\sim\operatorname{softmax}(z(x_i))`.

    Book: chapter 2, "Near a minimum"; paper: §3.5.

    Training a network of the same architecture on such labels makes a *well-specified* problem:
    at its population minimum the labels are distributed as the model predicts, the condition under
    which the empirical Fisher, the Fisher and the Hessian agree
    (:func:`~sam_tutorial.chapters.snapshot.snapshot` measures all three).

    Args:
        model: a classifier returning logits ``[n, C]`` (evaluated in eval mode, without gradients).
        inputs: a tensor or tuple of tensors with the samples on dim 0.
        generator: generator for the draws, on the model's device (default: torch's global one).
        batch_size: samples per forward pass.

    Returns:
        ``int64`` labels ``[n]``.

    >>> net = torch.nn.Linear(2, 3)
    >>> with torch.no_grad():
    ...     _ = net.weight.zero_(); _ = net.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))
    >>> sample_model_labels(net, torch.randn(4, 2))
    tensor([1, 1, 1, 1])
    """
    inputs = as_tuple(inputs)
    total = check_batch(inputs)
    batch_size = check_int("batch_size", batch_size)
    labels = []
    with _eval(model, True), torch.no_grad():
        for start in range(0, total, batch_size):
            logits = model(*(t[start : start + batch_size] for t in inputs))
            if logits.dim() != 2:
                raise ValueError(f"model must return logits of shape [n, C]; got {tuple(logits.shape)}")
            probs = logits.double().softmax(-1)
            labels.append(torch.multinomial(probs, 1, generator=generator).squeeze(1))
    return torch.cat(labels)
