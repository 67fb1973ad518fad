"""Tests for sam_tutorial.chapters.snapshot: snapshots of tr V, Fisher, Hessian and spectra against explicit
matrices, and the recorder as a metric hook of a training loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sam_tutorial.chapters import snapshot
from sam_tutorial.curvature import hessian
from sam_tutorial.sgn import fisher, per_sample, variance

CE = nn.CrossEntropyLoss(reduction="none")


def _data(n: int = 40, d: int = 3, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=gen)


def _explicit_V(grads: torch.Tensor) -> torch.Tensor:
    gc = grads - grads.mean(0)
    return gc.T @ gc / grads.shape[0]


def test_snapshot_of_a_linear_softmax_model_against_explicit_matrices() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4).double()
    x, y = _data()
    k = 4
    snap = snapshot.snapshot(model, CE, x, y, k=k, n_probes=400)
    hess = hessian.hessian_matrix(model, CE, x, y)
    grads = per_sample.per_sample_grads(model, CE, x, y)
    v = _explicit_V(grads)

    with torch.no_grad():
        assert math.isclose(snap.loss, float(CE(model(x), y).mean()), rel_tol=1e-12)
    assert math.isclose(snap.grad_sq_norm, float(grads.mean(0).square().sum()), rel_tol=1e-10)
    assert math.isclose(snap.trace_V, float(v.trace()), rel_tol=1e-10)
    assert math.isclose(snap.emp_fisher_trace, snap.trace_V + snap.grad_sq_norm, rel_tol=1e-10)
    # a linear softmax model: the true Fisher is the Hessian of the cross-entropy, exactly
    assert math.isclose(snap.fisher_trace, float(hess.trace()), rel_tol=1e-6)
    assert abs(snap.hessian_trace - float(hess.trace())) < 4 * snap.hessian_trace_se
    assert snap.hessian_trace_se > 0

    h_eigs = torch.linalg.eigvalsh(hess).flip(0)[:k]
    as_tensor = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    torch.testing.assert_close(as_tensor(snap.hessian_eigs), h_eigs, rtol=1e-6, atol=1e-9)
    v_vals, v_vecs = torch.linalg.eigh(v)
    v_vals, v_vecs = v_vals.flip(0)[:k], v_vecs.flip(1)[:, :k]
    torch.testing.assert_close(as_tensor(snap.sgn_eigs), v_vals, rtol=1e-8, atol=1e-10)
    along = torch.einsum("pk,pq,qk->k", v_vecs, hess, v_vecs)
    torch.testing.assert_close(as_tensor(snap.hessian_along_sgn), along, rtol=1e-6, atol=1e-9)


def test_snapshot_without_spectra_gives_the_same_traces() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    x, y = _data(seed=1)
    full = snapshot.snapshot(model, CE, x, y, k=3, n_probes=8)
    cheap = snapshot.snapshot(model, CE, x, y, k=3, n_probes=8, spectra=False)
    for name in ("loss", "grad_sq_norm", "trace_V", "emp_fisher_trace", "fisher_trace", "hessian_trace"):
        assert math.isclose(getattr(full, name), getattr(cheap, name), rel_tol=1e-8, abs_tol=1e-12), name
    assert cheap.sgn_eigs == cheap.hessian_eigs == cheap.hessian_along_sgn == ()
    assert len(full.sgn_eigs) == len(full.hessian_eigs) == len(full.hessian_along_sgn) == 3
    nofisher = snapshot.snapshot(model, CE, x, y, n_probes=2, spectra=False, fisher=False)
    assert math.isnan(nofisher.fisher_trace)


def test_sgn_eigenvectors_are_orthonormal_eigenvectors_of_V() -> None:
    grads = torch.randn(6, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    vals, vecs = variance.sgn_eigenvectors(grads, 4)
    v = _explicit_V(grads)
    torch.testing.assert_close(vecs @ vecs.T, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(vecs @ v, vals[:, None] * vecs)
    torch.testing.assert_close(vals, variance.sgn_spectrum(grads, 4))
    with pytest.raises(ValueError, match="fewer than k=6 positive eigenvalues"):
        variance.sgn_eigenvectors(grads, 6)  # the rank of V is at most n - 1 = 5


def test_snapshot_caps_the_spectrum_of_V_at_its_rank_and_leaves_the_model_alone() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 5), nn.Dropout(0.5), nn.Linear(5, 4)).double().train()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _data(n=4, seed=3)
    snap = snapshot.snapshot(model, CE, x, y, k=10, n_probes=4)
    assert len(snap.sgn_eigs) == 3 and len(snap.hessian_eigs) == 10
    assert all(m.training for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_recorder_records_snapshots_and_returns_trace_V() -> None:
    torch.manual_seed(4)
    model = nn.Linear(3, 4).double()
    x, y = _data(seed=4)
    rec = snapshot.SnapshotRecorder(CE, x, y, spectra_every=2, k=2, n_probes=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    values = []
    for _ in range(3):
        values.append(rec(model))
        opt.zero_grad()
        CE(model(x), y).mean().backward()
        opt.step()
    assert [len(s.sgn_eigs) for s in rec.snapshots] == [2, 0, 2]
    assert all(v.dim() == 0 for v in values)
    assert [float(v) for v in values] == pytest.approx([s.trace_V for s in rec.snapshots])
    assert snapshot.stack(rec.snapshots, "trace_V").shape == (3,)
    assert snapshot.stack([rec.snapshots, rec.snapshots], "loss").shape == (2, 3)


def test_recorder_as_a_fit_metric_hook() -> None:
    train = pytest.importorskip("sam_tutorial.engine.train")
    from sam_tutorial.engine.data import Dataset

    x, y = _data(n=64, seed=5)
    x = x.float()
    data = Dataset("toy", (x, y), (x, y), num_classes=4, clean_train_targets=y)
    torch.manual_seed(5)
    model = nn.Linear(3, 4)
    rec = snapshot.SnapshotRecorder(train.cross_entropy, x, y, spectra_every=0, n_probes=4)
    config = train.TrainConfig(optimizer="sgd", epochs=2, batch_size=16, lr=0.1, metric_epochs=(0, 2))
    result = train.fit(model, data, config, metrics={"tr_V": rec})
    assert result.history["metrics"]["epoch"] == [0, 2]
    assert result.history["metrics"]["tr_V"] == pytest.approx([s.trace_V for s in rec.snapshots], rel=1e-6)


def test_bad_arguments_raise_value_error_naming_them() -> None:
    model = nn.Linear(3, 4).double()
    x, y = _data()
    with pytest.raises(ValueError, match="k must be"):
        snapshot.snapshot(model, CE, x, y, k=0)
    with pytest.raises(ValueError, match="n_probes must be"):
        snapshot.snapshot(model, CE, x, y, n_probes=0)
    with pytest.raises(ValueError, match="spectra_every"):
        snapshot.SnapshotRecorder(CE, x, y, spectra_every=-1)
    with pytest.raises(ValueError, match="spectra_every, not spectra"):
        snapshot.SnapshotRecorder(CE, x, y, spectra=True)
    with pytest.raises(ValueError, match="name must be one of"):
        snapshot.stack([], "sgn_eigs")


def test_sample_model_labels_follow_the_softmax() -> None:
    model = nn.Linear(1, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.log(torch.tensor([0.2, 0.3, 0.5])))
    gen = torch.Generator().manual_seed(6)
    labels = fisher.sample_model_labels(model, torch.zeros(30000, 1), generator=gen, batch_size=7000)
    freq = labels.bincount(minlength=3).double() / 30000
    p = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    assert ((freq - p).abs() < 5 * (p * (1 - p) / 30000).sqrt()).all()
    with pytest.raises(ValueError, match="logits"):
        fisher.sample_model_labels(nn.Identity(), torch.zeros(3))
