r"""Chapter 5's explorer: one batch's RW-SAM scores and Gibbs weights as λ and the score type change.

The scores of a batch are computed once (:func:`batch_scores`: finite difference, exact directional
derivative, exact norm; see :mod:`sam_tutorial.sgn.reweighting`); the explorer only re-weights them, so
moving the slider is instant. :func:`weights_grid` draws the same panels for a few fixed settings: it is
the static figure the HTML shows, and what a notebook falls back to without ipywidgets
(:func:`weights_explorer` then returns ``None``).

>>> import matplotlib, torch
>>> matplotlib.use("Agg")
>>> s = BatchScores(torch.tensor([1.0, 2.0, 3.0]), {"finite-difference": torch.tensor([0.5, 2.5, 2.0])}, None)
>>> fig = weights_grid(s, [0.1, 1.0])
>>> len(fig.axes)
2
>>> matplotlib.pyplot.close(fig)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from sam_tutorial.chapters import plotting
from sam_tutorial.sgn.reweighting import (
    SCORES,
    SQRT_2_OVER_PI,
    effective_batch,
    gibbs_weights,
    probe_scores,
    rademacher_probe,
    spearman,
)

__all__ = [
    "BatchScores", "WeightsExplorer", "batch_scores", "weights_explorer", "weights_grid", "weights_panel",
]

LABELS = {"finite-difference": "finite difference (1 probe)", "exact": "exact $z^\\top\\nabla f_i$ (1 probe)",
          "norm": "exact norm $\\sqrt{2/\\pi}\\,\\|\\nabla f_i\\|$"}


class BatchScores(NamedTuple):
    """One batch's true gradient norms, its scores by method, and an optional mask (e.g. mislabelled)."""

    norms: Tensor
    scores: dict[str, Tensor]
    mask: Tensor | None


def batch_scores(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, *,
                 methods: Sequence[str] = SCORES, delta: float = 1e-2, seed: int = 0,
                 mask: Tensor | None = None) -> BatchScores:
    """Scores of one batch by each method, all with the same shared Rademacher probe."""
    probe = rademacher_probe(model, torch.Generator().manual_seed(seed))
    # on the CPU: the panels hand them to NumPy and Matplotlib, whatever device the model is on
    scores = {m: probe_scores(model, loss_fn, x, y, method=m, probe=probe, delta=delta).detach().cpu()
              for m in methods}
    norms = scores["norm"] / SQRT_2_OVER_PI if "norm" in scores else \
        probe_scores(model, loss_fn, x, y, method="norm").cpu() / SQRT_2_OVER_PI
    return BatchScores(norms.detach(), scores, None if mask is None else mask.cpu())


def weights_panel(ax: Axes, batch: BatchScores, method: str, lam: float) -> None:
    """Bars: the Gibbs weights of the batch, samples ordered by their true gradient norm."""
    order = torch.argsort(batch.norms)
    p = gibbs_weights(batch.scores[method].double(), lam)[order].numpy()
    idx = np.arange(len(p))
    colors = np.array([plotting.color("rw-sam")] * len(p), dtype=object)
    if batch.mask is not None:
        colors[batch.mask[order].numpy()] = plotting.color("sgd")
    ax.vlines(idx, 0, p, colors=list(colors), linewidth=2)  # one collection: fast for many panels
    ax.axhline(1 / len(p), color="0.4", lw=0.8, ls="--")
    rho_s = float(spearman(batch.scores[method], batch.norms))
    ax.set_title(f"{method}, λ={lam:g}: $1/\\sum p^2$={float(effective_batch(torch.tensor(p))):.1f}, "
                 f"Spearman {rho_s:.2f}", fontsize=9)
    ax.set_xlabel("samples, by true $\\|\\nabla f_i\\|$ (ascending)")
    ax.set_ylabel("$p_i$")


def weights_grid(batch: BatchScores, lams: Sequence[float], methods: Sequence[str] | None = None) -> Figure:
    """The static figure: one panel per (method, λ)."""
    methods = list(methods or batch.scores)
    fig, axes = plt.subplots(len(methods), len(lams), figsize=(3.6 * len(lams), 2.6 * len(methods)),
                             squeeze=False, constrained_layout=True)
    for r, m in enumerate(methods):
        for c, lam in enumerate(lams):
            weights_panel(axes[r, c], batch, m, lam)
    return fig


class WeightsExplorer:
    """The widget: a λ slider (log scale) and a score-type menu over precomputed :class:`BatchScores`."""

    def __init__(self, batch: BatchScores, widgets: Any) -> None:
        from IPython.display import display

        self.batch = batch
        self.lam = widgets.FloatLogSlider(value=0.3, base=10, min=-2, max=1, step=0.1, description="λ")
        self.method = widgets.Dropdown(options=list(batch.scores), value=next(iter(batch.scores)),
                                       description="score")
        self.out = widgets.Output()
        for w in (self.lam, self.method):
            w.observe(lambda _: self.draw(), names="value")
        self.box = widgets.VBox([widgets.HBox([self.lam, self.method]), self.out])
        display(self.box)
        self.draw()

    def draw(self) -> None:
        with self.out:
            self.out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 2.8), constrained_layout=True)
            weights_panel(ax, self.batch, self.method.value, self.lam.value)
            plt.show()


def weights_explorer(batch: BatchScores) -> WeightsExplorer | None:
    """Show the explorer; ``None`` (and nothing shown) when ipywidgets is not installed."""
    try:
        import ipywidgets as widgets
    except ImportError:
        return None
    return WeightsExplorer(batch, widgets)
