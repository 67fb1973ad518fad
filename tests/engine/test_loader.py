"""Tests for sam_tutorial.engine.loader: crop-and-flip against an explicit computation, epoch order, state."""

from __future__ import annotations

import pytest
import torch

from sam_tutorial.engine.loader import BatchLoader, crop_flip


def explicit_crop_flip(img: torch.Tensor, top: int, left: int, flip: bool, padding: int,
                       fill: torch.Tensor) -> torch.Tensor:
    """One image [C, H, W], the torchvision way: pad with the fill colour, crop, then mirror."""
    c, h, w = img.shape
    padded = torch.empty(c, h + 2 * padding, w + 2 * padding)
    for ch in range(c):
        padded[ch].fill_(float(fill[ch]))
    padded[:, padding : padding + h, padding : padding + w] = img
    out = padded[:, top : top + h, left : left + w]
    return out.flip(-1) if flip else out


def test_crop_flip_equals_explicit_loop() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 3, 6, 7, generator=g)
    offsets = torch.randint(0, 5, (9, 2), generator=g)
    flips = torch.tensor([True, False, True, True, False, False, True, False, True])
    fill = torch.tensor([-1.5, 0.0, 2.5])
    out = crop_flip(x, offsets, flips, padding=2, fill=fill)
    for i in range(9):
        want = explicit_crop_flip(x[i], int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]), 2, fill)
        assert torch.equal(out[i], want)


def test_crop_flip_corner_is_padding_and_centre_is_identity() -> None:
    x = torch.ones(1, 2, 4, 4)
    fill = torch.tensor([7.0, -7.0])
    out = crop_flip(x, torch.tensor([[0, 0]]), torch.tensor([False]), padding=1, fill=fill)
    assert torch.equal(out[0, 0, 0], torch.full((4,), 7.0))
    assert torch.equal(out[0, 1, :, 0], torch.full((4,), -7.0))
    assert torch.equal(out[0, :, 1:, 1:], torch.ones(2, 3, 3))
    same = crop_flip(x, torch.tensor([[1, 1]]), torch.tensor([False]), padding=1)
    assert torch.equal(same, x)


def test_crop_flip_checks_its_arguments() -> None:
    x = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="offsets must lie in"):
        crop_flip(x, torch.tensor([[0, 3], [0, 0]]), torch.tensor([False, False]), padding=1)
    with pytest.raises(ValueError, match="shape"):
        crop_flip(x[0], torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, dtype=torch.bool), padding=1)
    with pytest.raises(ValueError, match="offsets must have shape"):
        crop_flip(x, torch.zeros(3, 2, dtype=torch.long), torch.zeros(2, dtype=torch.bool), padding=1)


def test_each_epoch_is_a_permutation_and_epochs_differ() -> None:
    x = torch.arange(40).float().unsqueeze(1)
    loader = BatchLoader(x, torch.arange(40), 8, seed=3)
    epochs = [torch.cat([y for _, y in loader]) for _ in range(3)]
    assert len(loader) == 5
    for e in epochs:
        assert torch.equal(e.sort().values, torch.arange(40))
    assert not torch.equal(epochs[0], epochs[1])
    for xb, yb in loader:
        assert torch.equal(xb[:, 0].long(), yb)  # inputs and targets stay paired


def test_drop_last_and_no_shuffle() -> None:
    x = torch.arange(10).float()
    assert len(BatchLoader(x, x, 4)) == 2
    kept = BatchLoader(x, x, 4, drop_last=False, shuffle=False)
    assert [len(y) for _, y in kept] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in kept]), x)


def test_same_seed_same_batches_and_state_round_trip() -> None:
    x = torch.randn(24, 3, 5, 5)
    y = torch.arange(24)
    a = BatchLoader(x, y, 6, augment=True, padding=2, seed=11)
    b = BatchLoader(x, y, 6, augment=True, padding=2, seed=11)
    first_a, first_b = list(a), list(b)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(first_a, first_b))
    state = a.state_dict()
    second_a = list(a)
    c = BatchLoader(x, y, 6, augment=True, padding=2, seed=999)
    c.load_state_dict(state)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(second_a, list(c)))


def test_augmented_batches_follow_the_documented_draws() -> None:
    """Permutation, then per batch the (row, column) offsets and the flips, from one generator."""
    x = torch.randn(12, 3, 4, 4)
    y = torch.arange(12)
    fill = torch.tensor([0.1, 0.2, 0.3])
    loader = BatchLoader(x, y, 4, augment=True, padding=2, fill=fill, seed=5)
    g = torch.Generator().manual_seed(5)
    order = torch.randperm(12, generator=g)
    for i, (xb, yb) in enumerate(loader):
        idx = order[4 * i : 4 * i + 4]
        offsets = torch.randint(0, 5, (4, 2), generator=g)
        flips = torch.randint(0, 2, (4,), generator=g).bool()
        assert torch.equal(yb, idx)
        for j in range(4):
            top, left = int(offsets[j, 0]), int(offsets[j, 1])
            want = explicit_crop_flip(x[idx[j]], top, left, bool(flips[j]), 2, fill)
            assert torch.equal(xb[j], want)


def test_loader_checks_its_arguments() -> None:
    x = torch.zeros(10, 3)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(x, torch.zeros(10), 0)
    with pytest.raises(ValueError, match="larger than the data set"):
        BatchLoader(x, torch.zeros(10), 11)
    with pytest.raises(ValueError, match="targets has 9"):
        BatchLoader(x, torch.zeros(9), 2)
    with pytest.raises(ValueError, match="augment=True needs images"):
        BatchLoader(x, torch.zeros(10), 2, augment=True)
