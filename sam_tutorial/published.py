"""Every number this book takes from a publication, in one place, each with its source.

A leaf module: it imports nothing of ours, so any layer may read it (the catalogue builds the paper
experiments' descriptions from it, the reproduction layer compares against it, the chapters draw it).

Source tags (the book's page on sources says what each stands for):

* ``[N]`` a third-party note of Luo et al. (NeurIPS 2025), giving numbers without standard deviations;
* ``[A]`` the arXiv abstract page of the paper;
* ``[AF]`` Andriushchenko & Flammarion (2022), read off their plot.

The paper's full text was not available: table layouts and which optimizer each column means are
reconstructed (see the UNCONFIRMED register of :mod:`sam_tutorial.reproduction.unconfirmed`).

>>> TABLE1[("resnet18", "cifar10")][1], SOURCES["TABLE1"][:3]
(95.99, '[N]')
"""

from __future__ import annotations

__all__ = [
    "AF_FIG1",
    "CIFAR_TRAIN",
    "OVERHEAD_CLAIM",
    "SOURCES",
    "TABLE1",
    "TABLE2",
    "TABLE4",
    "TABLE6",
]

TABLE1: dict[tuple[str, str], tuple[float, float, float]] = {
    ("resnet18", "cifar10"): (95.62, 95.99, 96.24),
    ("resnet50", "cifar10"): (95.64, 96.06, 96.34),
    ("wrn28-10", "cifar10"): (96.47, 96.91, 97.11),
    ("resnet18", "cifar100"): (78.91, 78.90, 79.31),
    ("resnet50", "cifar100"): (79.55, 80.31, 80.83),
    ("wrn28-10", "cifar100"): (81.55, 83.25, 83.52),
}
"""Top-1 test accuracy (%) of SGD, SAM, RW-SAM by (model, data set), from paper Table 1 [N]."""

TABLE2: dict[str, tuple[float, float, float]] = {
    "ImageNet, ResNet-50": (76.67, 77.16, 77.37),
    "ViT-B/16 fine-tuning, CIFAR-10": (98.24, 98.40, 98.58),
    "ViT-B/16 fine-tuning, CIFAR-100": (88.71, 89.63, 89.89),
}
"""Top-1 accuracy (%) of the baseline (SGD; probably AdamW for ViT), SAM, RW-SAM, from paper Table 2 [N]."""

TABLE4: dict[float, tuple[float, float, float]] = {
    0.2: (87.54, 90.01, 90.34),
    0.4: (83.66, 86.40, 86.87),
    0.6: (76.64, 78.79, 81.52),
    0.8: (46.53, 37.69, 53.17),
}
"""Test accuracy (%) of SGD, SAM, RW-SAM by label-noise rate, from paper Table 4 [N]; model and data set
UNCONFIRMED (the catalogue assumes ResNet-18 on CIFAR-10)."""

TABLE6: dict[str, tuple[float, float]] = {
    "SGD": (572.39, 24.15),
    "SAM": (198.40, 6.20),
    "RW-SAM": (177.79, 5.10),
}
"""tr V at the solution (mean, std), from paper Table 6 [N]; model and data set UNCONFIRMED."""

OVERHEAD_CLAIM: dict[str, float] = {"rw-sam/sam": 7 / 6, "m": 64, "m-sam/sam": 2.0}
"""RW-SAM matches m-SAM (m = 64) at about 1/6 extra time over SAM, while m-SAM (m = 64) costs about 2x SAM
(a GPU statement), as claimed [N] and in the abstract [A]."""

CIFAR_TRAIN = 50_000
"""Training images per epoch of CIFAR-10/100 (the data sets' definition)."""

AF_FIG1: dict[str, dict[str, tuple[float, float]]] = {
    "ResNet-18 / CIFAR-10": {
        "ERM": (5.1, 5.1),
        "random perturbations": (5.1, 5.3),
        "n-SAM": (5.1, 5.3),
        "128-SAM (best rho)": (4.2, 4.2),
    },
    "ResNet-34 / CIFAR-100": {
        "ERM": (22.8, 22.8),
        "random perturbations": (22.2, 23.0),
        "n-SAM": (22.8, 23.2),
        "128-SAM (best rho)": (20.2, 20.2),
    },
}
"""Test error (%) of Andriushchenko & Flammarion (2022), Fig. 1 [AF], read off the plot (low, high over
their radii; a single value where the range is one number)."""

SOURCES: dict[str, str] = {
    "TABLE1": "[N] Luo et al. (NeurIPS 2025), Table 1",
    "TABLE2": "[N] Luo et al. (NeurIPS 2025), Table 2",
    "TABLE4": "[N] Luo et al. (NeurIPS 2025), Table 4",
    "TABLE6": "[N] Luo et al. (NeurIPS 2025), Table 6",
    "OVERHEAD_CLAIM": "[N] Luo et al. (NeurIPS 2025), cost statements; [A] abstract",
    "CIFAR_TRAIN": "the CIFAR-10/100 data sets (50,000 training images)",
    "AF_FIG1": "[AF] Andriushchenko & Flammarion (2022), Fig. 1, read off the plot",
}
"""The source of every constant of this module, by name."""
