"""Chapter 5's explorer: scores of one batch, the static grid, the widget guard."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sam_tutorial.chapters.rwsam_explorer import BatchScores, batch_scores, weights_grid  # noqa: E402
from sam_tutorial.sgn.per_sample import per_sample_grads  # noqa: E402


def CE(out, y):
    return nn.functional.cross_entropy(out, y, reduction="none")


def test_batch_scores_share_one_probe_and_true_norms() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    b = batch_scores(net, CE, x, y, delta=1e-6)
    torch.testing.assert_close(b.norms, per_sample_grads(net, CE, x, y).norm(dim=1))
    torch.testing.assert_close(b.scores["norm"], math.sqrt(2 / math.pi) * b.norms)
    # the same probe
    torch.testing.assert_close(b.scores["finite-difference"], b.scores["exact"], rtol=1e-4, atol=1e-8)


def test_weights_grid_titles_report_effective_batch() -> None:
    s = BatchScores(torch.tensor([1.0, 2.0, 3.0, 4.0]), {"norm": torch.tensor([1.0, 2.0, 3.0, 4.0])},
                    torch.tensor([False, True, False, False]))
    fig = weights_grid(s, [0.0, 100.0])
    titles = [ax.get_title() for ax in fig.axes]
    assert "=4.0" in titles[0] and "=1.0" in titles[1] and "Spearman 1.00" in titles[0]
    plt.close(fig)


def test_explorer_without_ipywidgets(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from sam_tutorial.chapters import rwsam_explorer

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "ipywidgets":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    s = BatchScores(torch.ones(3), {"norm": torch.ones(3)}, None)
    assert rwsam_explorer.weights_explorer(s) is None
