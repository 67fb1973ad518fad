"""The shared figure style: fixed colours per variant, shades ordered light to dark, error bands."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sam_tutorial.chapters import plotting  # noqa: E402


@pytest.mark.parametrize(("name", "key"), [
    ("SAM", "sam"), ("m-SAM", "m-sam"), ("m-sam-m16-loop", "m-sam"), ("RW-SAM", "rw-sam"),
    ("USAM", "usam"), ("n-SAM", "n-sam"),
])
def test_variant_colours_are_fixed(name: str, key: str) -> None:
    assert plotting.color(name) == plotting.COLORS[key]
    assert plotting.color("unknown thing") == "#7f7f7f"


def test_shades_get_darker() -> None:
    shades = [plotting.shade("#d62728", i, 4) for i in range(4)]
    brightness = [sum(s[:3]) for s in shades]
    assert brightness == sorted(brightness, reverse=True)


def test_mean_band_draws_mean_and_standard_error() -> None:
    plotting.use_style()
    fig, (ax,) = plotting.figure()
    runs = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    plotting.mean_band(ax, [0, 1, 2], runs, label="SAM")
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [2.0, 3.0, 4.0])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    se = np.std([1.0, 3.0], ddof=1) / np.sqrt(2)
    assert band.min() == pytest.approx(2.0 - se) and band.max() == pytest.approx(4.0 + se)
    matplotlib.pyplot.close(fig)
