r"""Interactive explorers for the book, each with a static fallback that the HTML shows.

Widgets need a live kernel: in the built HTML their Python callbacks do not run, so every explorer
comes with a function that draws the same picture for a few fixed settings. :func:`landscape_explorer`
returns ``None`` when ipywidgets is missing, so a notebook can guard it with one ``if``.

The landscape explorer runs SGD and one SAM-family optimizer (:class:`~sam_tutorial.optim.sam.SAM`,
normalised or not) on a 2-D toy problem (:func:`sam_tutorial.theory.problems.make_sharp_flat_problem`) from
the
same start and with the same batches, and draws both paths on the contour plot of the loss.

>>> import matplotlib, torch
>>> matplotlib.use("Agg")
>>> from sam_tutorial.theory.problems import make_sharp_flat_problem
>>> p = make_sharp_flat_problem()
>>> fig, runs = landscape_grid(p, torch.tensor([-2.4, 0.8], dtype=torch.float64),
...                            {True: [0.1], False: [0.01]}, n_steps=3)
>>> sorted(runs)
[(False, 0.01), (True, 0.1)]
>>> matplotlib.pyplot.close(fig)
"""


from __future__ import annotations

import io
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from torch import Tensor

from sam_tutorial.chapters import plotting
from sam_tutorial.chapters.landscape import Run, loss_grid, run_optimizer
from sam_tutorial.optim import SAM
from sam_tutorial.theory.problems import SharpFlatProblem
from sam_tutorial.theory.stability import in_flat_basin

__all__ = [
    "LandscapeExplorer",
    "XLIM",
    "YLIM",
    "draw_landscape",
    "draw_run",
    "landscape_explorer",
    "landscape_grid",
    "landscape_panel",
]


XLIM = (-5.0, 5.5)


YLIM = (-2.5, 2.5)


def draw_landscape(
    ax: Axes,
    problem: SharpFlatProblem,
    *,
    xlim: tuple[float, float] = XLIM,
    ylim: tuple[float, float] = YLIM,
    resolution: int = 150,
    levels: int = 14,
) -> None:
    """Filled contours of the full loss :math:`f` (log-spaced levels) with both minima marked."""
    xs, ys, f = loss_grid(problem, xlim, ylim, resolution)
    low = float(f.min())
    lv = np.geomspace(low, float(f.max()), levels)
    ax.contourf(xs.numpy(), ys.numpy(), f.numpy(), levels=lv, cmap="YlOrBr", alpha=0.45,
                norm=LogNorm(vmin=low, vmax=float(f.max())))
    ax.contour(xs.numpy(), ys.numpy(), f.numpy(), levels=lv, colors="#a0522d", linewidths=0.3, alpha=0.6)
    for centre, name in ((problem.sharp_centre, "sharp"), (problem.flat_centre, "flat")):
        ax.plot(*centre.tolist(), marker="*", color="black", markersize=8, linestyle="none", zorder=5)
        ax.annotate(name, (float(centre[0]), float(centre[1])), textcoords="offset points", xytext=(0, 22),
                    ha="center", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal")
    ax.grid(False)


def draw_run(ax: Axes, points: Tensor, *, label: str, color: str, **kwargs: Any) -> None:
    """A path ``[k, 2]`` as a thin line with small markers; a ring at its end."""
    xy = points.detach().cpu().numpy()
    ax.plot(xy[:, 0], xy[:, 1], color=color, linewidth=0.8, marker=".", markersize=2.5, label=label,
            **kwargs)
    ax.plot(xy[-1, 0], xy[-1, 1], marker="o", markersize=7, markerfacecolor="none",
            markeredgecolor=color, markeredgewidth=1.6, linestyle="none", zorder=kwargs.get("zorder"))


def _run(problem: SharpFlatProblem, x0: Tensor, rho: float, normalize: bool, lr: float, b: int,
         n_steps: int, seed: int) -> Run:
    return run_optimizer(
        problem, x0, lambda model, base: SAM(model, base, rho=rho, normalize=normalize),
        lr=lr, b=b, n_steps=n_steps, seed=seed,
    )


def landscape_panel(
    ax: Axes,
    problem: SharpFlatProblem,
    x0: Tensor,
    *,
    rho: float,
    normalize: bool,
    lr: float = 0.1,
    b: int = 4,
    n_steps: int = 200,
    seed: int = 0,
    sgd: Run | None = None,
    resolution: int = 150,
) -> Run:
    """Draw the landscape, SGD's path and the path of SAM (``normalize=True``) or USAM with radius
    ``rho``, both from ``x0`` with the same batches; the title says where the variant ended.

    Args:
        ax: where to draw.
        problem: the 2-D problem.
        x0: the common start ``[2]``.
        rho: radius of the variant.
        normalize: SAM (``True``) or USAM (``False``).
        lr: learning rate (plain SGD base, no momentum).
        b: batch size.
        n_steps: steps.
        seed: seed of the batches (shared by both runs).
        sgd: SGD's run, if already computed (it does not depend on ``rho``).
        resolution: grid of the contour plot.

    Returns:
        The variant's :class:`~sam_tutorial.chapters.landscape.Run`.
    """
    name = "SAM" if normalize else "USAM"
    run = _run(problem, x0, rho, normalize, lr, b, n_steps, seed)
    if sgd is None:
        sgd = _run(problem, x0, 0.0, True, lr, b, n_steps, seed)
    draw_landscape(ax, problem, resolution=resolution)
    draw_run(ax, run.points, label=name, color=plotting.color(name))
    draw_run(ax, sgd.points, label="SGD", color=plotting.color("sgd"), zorder=4)
    basin = "flat" if bool(in_flat_basin(problem, run.points[-1])) else "sharp"
    ax.set_title(f"{name}, ρ = {rho:g}: ends in the {basin} basin")
    ax.legend(loc="lower right")
    return run


def landscape_grid(
    problem: SharpFlatProblem,
    x0: Tensor,
    rhos: dict[bool, list[float]],
    *,
    lr: float = 0.1,
    b: int = 4,
    n_steps: int = 200,
    seed: int = 0,
    resolution: int = 120,
) -> tuple[Figure, dict[tuple[bool, float], Run]]:
    """The static fallback of :func:`landscape_explorer`: one row per form (``True``: SAM,
    ``False``: USAM), one panel per radius in ``rhos[normalize]``.

    Returns:
        The figure and the runs by ``(normalize, rho)``.
    """
    rows = list(rhos)
    ncols = max(len(v) for v in rhos.values())
    fig, axes = plotting.figure(ncols=ncols, nrows=len(rows), width=3.4 * ncols, height=2.1 * len(rows))
    sgd = _run(problem, x0, 0.0, True, lr, b, n_steps, seed)
    runs = {}
    for r, normalize in enumerate(rows):
        for c in range(ncols):
            ax = axes[r * ncols + c]
            if c >= len(rhos[normalize]):
                ax.set_visible(False)
                continue
            rho = rhos[normalize][c]
            runs[(normalize, rho)] = landscape_panel(
                ax, problem, x0, rho=rho, normalize=normalize, lr=lr, b=b, n_steps=n_steps,
                seed=seed, sgd=sgd, resolution=resolution,
            )
            ax.title.set_fontsize(9)
            legend = ax.get_legend()
            if legend is not None and (r, c) != (0, 0):
                legend.remove()
    return fig, runs


class LandscapeExplorer:
    """An ipywidgets explorer over :func:`landscape_panel`: a log slider for ρ and a SAM/USAM switch.

    The picture is a PNG in an ``ipywidgets.Image``, redrawn by the controls' callbacks (no ``Output``
    widget, whose captured output can stall headless notebook runners). Build it with
    :func:`landscape_explorer`; a notebook displays it like a widget.

    Attributes:
        rho: the ``FloatLogSlider``.
        normalize: the ``Checkbox`` (checked: SAM, unchecked: USAM).
        image: the ``Image`` showing the current picture.
        widget: the whole ``VBox``.
        result: the variant's :class:`~sam_tutorial.chapters.landscape.Run` for the current settings.
    """

    def __init__(self, problem: SharpFlatProblem, x0: Tensor, *, rho: float, normalize: bool, lr: float,
                 b: int, n_steps: int, seed: int) -> None:
        import ipywidgets as w

        self._args: dict[str, Any] = dict(lr=lr, b=b, n_steps=n_steps, seed=seed)
        self._problem, self._x0 = problem, x0
        self._sgd = _run(problem, x0, 0.0, True, lr, b, n_steps, seed)  # does not depend on the controls
        self.rho = w.FloatLogSlider(value=rho, base=10, min=-3, max=0, step=0.05, description="ρ",
                                    continuous_update=False, readout_format=".3f")
        self.normalize = w.Checkbox(value=normalize, description="normalised (SAM)")
        self.image = w.Image(format="png")
        self.widget = w.VBox([w.HBox([self.rho, self.normalize]), self.image])
        self.result: Run | None = None
        self.rho.observe(self.update, names="value")
        self.normalize.observe(self.update, names="value")
        self.update()

    def update(self, *_: object) -> None:
        """Recompute the run for the current controls and redraw the picture."""
        fig, (ax,) = plotting.figure(width=6.4, height=3.4)
        self.result = landscape_panel(ax, self._problem, self._x0, rho=float(self.rho.value),
                                      normalize=bool(self.normalize.value), sgd=self._sgd, **self._args)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        self.image.value = buffer.getvalue()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def landscape_explorer(
    problem: SharpFlatProblem,
    x0: Tensor,
    *,
    rho: float = 0.3,
    normalize: bool = True,
    lr: float = 0.1,
    b: int = 4,
    n_steps: int = 200,
    seed: int = 0,
) -> LandscapeExplorer | None:
    """The explorer of :class:`LandscapeExplorer` for a 2-D problem and a start ``x0``.

    Returns:
        The explorer (display it), or ``None`` if ipywidgets is not installed.
    """
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return None
    return LandscapeExplorer(problem, x0, rho=rho, normalize=normalize, lr=lr, b=b, n_steps=n_steps,
                             seed=seed)
