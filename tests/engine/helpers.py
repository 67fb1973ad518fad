"""Small data sets and files for the experiment-engine tests (data, loader, train, runner, CLI)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sam_tutorial.engine.data import Dataset, load_dataset


def mnist1d_root(factory: pytest.TempPathFactory) -> Path:
    """A data folder holding the MNIST-1D cache, generated once per test session (per worker)."""
    root = factory.getbasetemp() / "engine-data"
    if not (root / "mnist1d").exists():
        load_dataset("mnist1d", root=root)
    return root


def write_fake_cifar(root: Path, name: str = "cifar10", per_file: int = 6, seed: int = 0,
                     bytes_keys: bool = False, protocol: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write tiny CIFAR pickles in the official layout; return {file: (uint8 data [N, 3072], labels)}."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, key, classes = root / "cifar-10-batches-py", [
            *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"], "labels", 10
    else:
        folder, files, key, classes = root / "cifar-100-python", ["train", "test"], "fine_labels", 100
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for f in files:
        data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, size=per_file)
        entry = {"data": data, key: [int(v) for v in labels], "batch_label": f"fake {f}"}
        if bytes_keys:
            entry = {k.encode(): v for k, v in entry.items()}
        (folder / f).write_bytes(pickle.dumps(entry, protocol=protocol))
        out[f] = (data, labels)
    return out


def toy_dataset(n: int = 64, d: int = 5, classes: int = 3, seed: int = 0, n_test: int = 32) -> Dataset:
    """Gaussian inputs with labels from a random linear map (learnable), as a Dataset."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, classes, generator=g)
    x = torch.randn(n + n_test, d, generator=g)
    y = (x @ w).argmax(1)
    return Dataset("toy", (x[:n], y[:n]), (x[n:], y[n:]), num_classes=classes, clean_train_targets=y[:n],
                   info={"n_train": n})


def image_dataset(n: int = 32, size: int = 8, classes: int = 3, seed: int = 0) -> Dataset:
    """Random [N, 3, size, size] images as an image Dataset (augmentation applies)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 16, 3, size, size, generator=g)
    y = torch.randint(0, classes, (n + 16,), generator=g)
    return Dataset("img", (x[:n], y[:n]), (x[n:], y[n:]), num_classes=classes, clean_train_targets=y[:n],
                   image=True, pad_fill=torch.tensor([-1.0, 0.5, 2.0]), info={"n_train": n})


def tiny_convnet(classes: int = 3, seed: int = 0) -> nn.Module:
    """Conv + BatchNorm + linear: has buffers, so resume must restore them."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, classes))


_SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__", "__format__", "nonzero")


def count_host_syncs(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Patch the tensor methods that wait for the device to count their calls in ``{"n": ...}`` (returned)."""
    counts = {"n": 0}

    def counting(fn: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*a: object, **k: object) -> object:
            counts["n"] += 1
            return fn(*a, **k)

        return wrapper

    for name in _SYNCING:
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    return counts
