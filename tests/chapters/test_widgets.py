"""sam_tutorial.chapters.widgets: the drawn paths are exactly the optimizers' runs, the explorer recomputes
the
run for the chosen settings, and it degrades to ``None`` without ipywidgets."""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sam_tutorial.chapters import landscape, plotting, widgets
from sam_tutorial.optim import SAM  # noqa: E402
from sam_tutorial.theory import (
    problems,
    stability,  # noqa: E402
)

X0 = torch.tensor([-2.4, 0.8], dtype=torch.float64)
STEPS = 40


@pytest.fixture(scope="module")
def problem() -> problems.SharpFlatProblem:
    return problems.make_sharp_flat_problem()


def _reference(problem, rho: float, normalize: bool, seed: int = 0) -> landscape.Run:
    return landscape.run_optimizer(problem, X0, lambda m, b: SAM(m, b, rho=rho, normalize=normalize),
                                   lr=0.1, b=4, n_steps=STEPS, seed=seed)


def _paths(ax) -> dict[str, np.ndarray]:
    return {ln.get_label(): np.c_[ln.get_xdata(), ln.get_ydata()] for ln in ax.get_lines()
            if not ln.get_label().startswith("_") and len(ln.get_xdata()) > 1}


def test_panel_draws_the_runs_and_names_the_basin(problem) -> None:
    plotting.use_style()
    fig, (ax,) = plotting.figure()
    run = widgets.landscape_panel(ax, problem, X0, rho=0.05, normalize=False, n_steps=STEPS, seed=2)
    expected = _reference(problem, 0.05, False, seed=2)
    torch.testing.assert_close(run.points, expected.points)
    paths = _paths(ax)
    np.testing.assert_array_equal(paths["USAM"], expected.points.numpy())
    np.testing.assert_array_equal(paths["SGD"], _reference(problem, 0.0, True, seed=2).points.numpy())
    basin = "flat" if bool(stability.in_flat_basin(problem, expected.points[-1])) else "sharp"
    assert ax.get_title().endswith(f"the {basin} basin")
    plt.close(fig)


def test_grid_has_one_panel_per_setting(problem) -> None:
    fig, runs = widgets.landscape_grid(problem, X0, {True: [0.1, 0.4], False: [0.02]}, n_steps=STEPS)
    assert sorted(runs) == [(False, 0.02), (True, 0.1), (True, 0.4)]
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(visible) == 3 and not fig.axes[3].get_visible()
    torch.testing.assert_close(runs[(True, 0.4)].points, _reference(problem, 0.4, True).points)
    plt.close(fig)


def test_explorer_recomputes_for_new_settings(problem) -> None:
    pytest.importorskip("ipywidgets")
    open_before = set(plt.get_fignums())
    explorer = widgets.landscape_explorer(problem, X0, rho=0.2, n_steps=STEPS)
    torch.testing.assert_close(explorer.result.points, _reference(problem, 0.2, True).points)
    first = bytes(explorer.image.value)
    assert first.startswith(b"\x89PNG")
    explorer.normalize.value = False
    explorer.rho.value = 0.03
    torch.testing.assert_close(explorer.result.points, _reference(problem, explorer.rho.value, False).points)
    assert bytes(explorer.image.value) != first and bytes(explorer.image.value).startswith(b"\x89PNG")
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()
    assert set(plt.get_fignums()) == open_before  # every figure it drew is closed


def test_explorer_is_none_without_ipywidgets(problem, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` raise ImportError
    assert widgets.landscape_explorer(problem, X0, n_steps=STEPS) is None
