"""Chapter 5's study helpers: the exact-score RW-SAM, labels, and the summary over seeds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sam_tutorial.chapters.rwsam_study import ScoredRWSAM, arm_label, best_rho, summarise
from sam_tutorial.optim import SAM
from sam_tutorial.sgn.per_sample import per_sample_grads


def CE(out, y):
    return nn.functional.cross_entropy(out, y, reduction="none")


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def test_scored_rwsam_weights_are_gibbs_of_exact_norms() -> None:
    net = _net()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    expected = torch.softmax(0.7 * math.sqrt(2 / math.pi) * per_sample_grads(net, CE, x, y).norm(dim=1), 0)
    opt = ScoredRWSAM(net, torch.optim.SGD(net.parameters(), lr=0.1), rho=0.05, lam=0.7, delta=1e-3,
                      score_kind="norm", seed=0)
    opt.step(x, y, CE)
    torch.testing.assert_close(opt.last_weights.double(), expected, rtol=1e-5, atol=1e-7)


def test_scored_rwsam_lam_zero_is_sam() -> None:
    a, b = _net(), _net()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    opt_a = ScoredRWSAM(a, torch.optim.SGD(a.parameters(), lr=0.1), rho=0.1, lam=0.0, delta=1e-3,
                        score_kind="jvp", seed=0)
    opt_b = SAM(b, torch.optim.SGD(b.parameters(), lr=0.1), rho=0.1)
    for _ in range(2):
        opt_a.step(x, y, CE)
        opt_b.step(x, y, CE)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="score_kind"):
        ScoredRWSAM(a, torch.optim.SGD(a.parameters(), lr=0.1), rho=0.1, lam=0.0, delta=1e-3, score_kind="fd")


def test_labels_and_summary() -> None:
    assert arm_label(dict(opt="msam", m=8)) == "m-sam-m8"
    assert arm_label(dict(opt="rwsam", weighted=True, score="norm")) == "rw-sam-weighted-norm"
    recs = [dict(arm=dict(opt="sam", rho=r), label="sam", test_acc=a) for r, a in
            ((0.05, 0.60), (0.05, 0.62), (0.1, 0.65), (0.1, 0.63))]
    rows = summarise(recs, keys=("test_acc",))
    by_rho = {r["rho"]: r for r in rows}
    assert by_rho[0.05]["test_acc"] == pytest.approx((0.61, math.sqrt(2e-4)))
    assert best_rho(rows)["sam"]["rho"] == 0.1
