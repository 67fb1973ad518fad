"""One figure style for the whole book, and the few helpers the chapters share.

Every chapter calls :func:`use_style` once (its ``parameters`` cell does) and draws with matplotlib;
the variants of the SAM family always get the same colour (:data:`COLORS`), so a reader can follow
"m-SAM, m = 4" from one chapter to the next.

>>> import matplotlib
>>> matplotlib.use("Agg")
>>> use_style()
>>> fig, axes = figure(ncols=2)
>>> len(axes)
2
>>> color("m-sam-m16") == color("m-SAM") == COLORS["m-sam"]
True
"""


from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sam_tutorial.optim.variants import REGISTRY

__all__ = ["COLORS", "STYLE", "color", "figure", "mean_band", "shade", "use_style"]


COLORS: dict[str, str] = {"gd": REGISTRY["sgd"].color, **{name: v.color for name, v in REGISTRY.items()}}
"""A fixed colour per variant, read from the variant registry (:data:`sam_tutorial.optim.variants.REGISTRY`;
``gd``, full-batch gradient descent, shares SGD's)."""


STYLE: dict[str, Any] = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "font.size": 10,
}


def use_style() -> None:
    """Apply the book's matplotlib style (a light grid, no top/right spines, 110 dpi PNGs)."""
    mpl.style.use(STYLE)


def color(name: str) -> str:
    """The colour of a variant by name or label (``"SAM"``, ``"m-SAM"``, ``"m-sam-m16"``, ``"rw-sam (λ=1)"``:
    the longest variant name the text starts with); grey if it starts with none."""
    key = name.lower()
    colors = {**COLORS, **{n: v.color for n, v in REGISTRY.items()}}  # and variants registered since import
    for prefix in sorted(colors, key=len, reverse=True):
        if key.startswith(prefix):
            return colors[prefix]
    return "#7f7f7f"


def shade(base: str, i: int, n: int) -> tuple[float, float, float, float]:
    """The i-th of n shades of a colour, light to dark (e.g. one per micro-batch size m)."""
    rgb = np.array(mpl.colors.to_rgb(base))
    t = 0.35 + 0.65 * (i + 1) / max(n, 1)
    r, g, b = (1 - t + t * rgb).tolist()
    return (r, g, b, 1.0)


def figure(ncols: int = 1, nrows: int = 1, width: float | None = None,
           height: float | None = None) -> tuple[Figure, list[Axes]]:
    """A figure with a flat list of axes: 6.4 in wide (up to 9.6 in for 3+ columns), 3.2 in per row."""
    w = width if width is not None else min(9.6, max(6.4, 3.2 * ncols))
    h = height if height is not None else 3.2 * nrows
    fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False, constrained_layout=True)
    return fig, list(axes.ravel())


def mean_band(ax: Axes, x: Sequence[float] | np.ndarray, runs: np.ndarray, *, label: str,
              color_name: str | None = None, **kwargs: object) -> None:
    """Plot the mean over runs (rows of ``runs``) with a band of ± one standard error."""
    runs = np.atleast_2d(np.asarray(runs, dtype=float))
    mean = runs.mean(0)
    c = color(color_name or label)
    ax.plot(x, mean, label=label, color=c, **kwargs)  # type: ignore[arg-type]
    if runs.shape[0] > 1:
        se = runs.std(0, ddof=1) / np.sqrt(runs.shape[0])
        ax.fill_between(x, mean - se, mean + se, color=c, alpha=0.2, linewidth=0)
