"""A device-resident batch iterator with on-device augmentation (random crop with padding, flip).

The whole data set is moved to the device once; each epoch draws a permutation, and for images a crop
offset and a flip per sample, from one CPU :class:`torch.Generator`. Its state is the loader's
``state_dict``, so a run resumed at an epoch boundary sees the same batches as an uninterrupted one.

Augmentation is torchvision's ``RandomCrop(32, padding=4)`` followed by ``RandomHorizontalFlip()``,
written as one gather: pad with ``fill`` (the normalised value of a black pixel, so that padding
before or after normalisation agree), take the window at the drawn offset, reverse its columns if
flipped.

>>> x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
>>> same = crop_flip(x, torch.tensor([[1, 1], [1, 1]]), torch.tensor([False, False]), padding=1)
>>> torch.equal(same, x)
True
>>> crop_flip(x[:1], torch.tensor([[1, 1]]), torch.tensor([True]), padding=1)[0, 0, 0]
tensor([2., 1., 0.])
"""


from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from sam_tutorial.config import check_bool, check_device, check_int, check_seed

__all__ = ["BatchLoader", "crop_flip"]


def crop_flip(
    images: Tensor, offsets: Tensor, flips: Tensor, *, padding: int, fill: Tensor | float = 0.0
) -> Tensor:
    """Pad, crop a window of the original size at ``offsets``, and mirror the samples in ``flips``.

    Args:
        images: ``[B, C, H, W]``.
        offsets: ``[B, 2]`` integer (row, column) of each window's top-left corner in the padded
            image, each in ``[0, 2 * padding]`` (``(padding, padding)`` is the identity crop).
        flips: ``[B]`` booleans; True mirrors the sample left-right (after cropping).
        padding: pixels added on every side.
        fill: padding value, a number or a per-channel tensor ``[C]``.

    Returns:
        ``[B, C, H, W]`` augmented images on ``images``' device.

    Raises:
        ValueError: for inputs that are not ``[B, C, H, W]``, offsets/flips of the wrong shape, or
            offsets outside ``[0, 2 * padding]``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    b, c, h, w = images.shape
    if offsets.shape != (b, 2) or flips.shape != (b,):
        raise ValueError(
            f"offsets must have shape ({b}, 2) and flips ({b},); got {tuple(offsets.shape)}, "
            f"{tuple(flips.shape)}"
        )
    if padding < 0 or (len(offsets) and (int(offsets.min()) < 0 or int(offsets.max()) > 2 * padding)):
        raise ValueError(f"offsets must lie in [0, 2 * padding] = [0, {2 * padding}]")
    return _crop_flip(images, offsets, flips, padding, fill)


def _crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, padding: int, fill: Tensor | float) -> Tensor:
    """:func:`crop_flip` without the checks (they read offsets on the host)."""
    b, c, h, w = images.shape
    dev = images.device
    padded = images.new_empty(b, c, h + 2 * padding, w + 2 * padding)
    padded.copy_(torch.as_tensor(fill, dtype=images.dtype, device=dev).reshape(1, -1, 1, 1).expand_as(padded))
    padded[:, :, padding : padding + h, padding : padding + w] = images
    offsets, flips = offsets.to(dev), flips.to(dev)
    rows = offsets[:, :1] + torch.arange(h, device=dev)  # [B, H]
    cols = offsets[:, 1:] + torch.arange(w, device=dev)  # [B, W]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=dev)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # advanced indices first: [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


class BatchLoader:
    """Mini-batches of a tensor data set that lives on ``device``, reshuffled every epoch.

    Args:
        inputs: ``[N, ...]`` inputs.
        targets: ``[N]`` targets.
        batch_size: samples per batch.
        shuffle: draw a new permutation every epoch (else the stored order).
        drop_last: drop the last, smaller batch (so every batch has ``batch_size`` samples).
        augment: random crop with ``padding`` and horizontal flip (images ``[N, C, H, W]`` only).
        padding: crop padding in pixels.
        fill: padding value (number or per-channel ``[C]``), e.g. ``Dataset.pad_fill``.
        device: where batches live (default: where ``inputs`` are).
        seed: seed of the loader's generator (permutations, crop offsets, flips).

    Raises:
        ValueError: for a batch size < 1 or larger than the data set with ``drop_last``, inputs and
            targets of different lengths or targets that are not ``[N]``, ``augment`` on inputs that are
            not images, a negative padding, a fill of the wrong size, a bad seed or device.
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        augment: bool = False,
        padding: int = 4,
        fill: Tensor | float = 0.0,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        for name, t in (("inputs", inputs), ("targets", targets)):
            if not isinstance(t, Tensor) or t.dim() == 0:
                raise ValueError(f"{name} must be a tensor with the samples on dim 0, got {type(t).__name__}")
        if targets.dim() != 1:
            raise ValueError(f"targets must be one label per sample, shape [N]; got {tuple(targets.shape)}")
        if len(inputs) != len(targets):
            raise ValueError(f"inputs has {len(inputs)} samples but targets has {len(targets)}")
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last), ("augment", augment)):
            check_bool(name, flag)  # "False" is true in Python: refused, not read as True
        check_int("padding", padding, low=0)
        check_seed("seed", seed)
        check_int("batch_size", batch_size)
        if drop_last and batch_size > len(inputs):
            raise ValueError(
                f"batch_size={batch_size} is larger than the data set ({len(inputs)} samples) and "
                "drop_last=True would yield no batch"
            )
        if augment and inputs.ndim != 4:
            raise ValueError(f"augment=True needs images [N, C, H, W]; got inputs {tuple(inputs.shape)}")
        if augment and isinstance(fill, Tensor) and fill.numel() not in (1, inputs.shape[1]):
            raise ValueError(f"fill must be a number or one value per channel ({inputs.shape[1]}); got "
                             f"{fill.numel()} values")
        dev = check_device("device", device) if device is not None else inputs.device
        self.inputs, self.targets = inputs.to(dev), targets.to(dev)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.padding = augment, padding
        self.fill = fill.to(dev) if isinstance(fill, Tensor) else fill
        self.device = dev
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.inputs)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y, _ in self.with_indices():
            yield x, y

    def with_indices(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """One epoch of ``(inputs, targets, indices)``: ``indices`` (on ``device``) are the batch's rows of
        the data set, so per-sample facts (e.g. which labels label noise corrupted) travel with the batch.
        Draws from the generator exactly as iterating the loader does."""
        n = len(self.inputs)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x, y = self.inputs[idx], self.targets[idx]
            if self.augment:
                b = len(idx)
                offsets = torch.randint(0, 2 * self.padding + 1, (b, 2), generator=self.generator)
                flips = torch.randint(0, 2, (b,), generator=self.generator).bool()
                x = _crop_flip(x, offsets, flips, self.padding, self.fill)
            yield x, y, idx

    def state_dict(self) -> dict[str, Any]:
        """The generator's state (take it between epochs)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator's state saved by :meth:`state_dict`.

        Raises:
            ValueError: if ``state`` is not what :meth:`state_dict` returns (nothing is changed).
        """
        gen = state.get("generator") if isinstance(state, dict) else None
        if not isinstance(gen, Tensor) or gen.dtype != torch.uint8:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError("state must be BatchLoader.state_dict() output ({'generator': a uint8 "
                             f"tensor}}); got {keys}")
        self.generator.set_state(gen)
