"""sam_tutorial: a runnable textbook and library for m-sharpness, SAM, m-SAM and Reweighted SAM.

It follows Luo, Harandi, Phung & Le, *Unveiling m-Sharpness Through the Structure of Stochastic
Gradient Noise* (NeurIPS 2025, arXiv:2509.18001).

The optimizers are the public face; the subpackages load on first use (``sam_tutorial.sgn`` imports
nothing until touched), so ``import sam_tutorial`` costs only torch:

>>> import sam_tutorial as st
>>> sorted(n for n in st.__all__ if n[0].isupper())
['MSAM', 'NSAM', 'PerturbedOptimizer', 'RWSAM', 'SAM', 'StepStats']
>>> st.sgn.batch_noise_coefficient(10, 1)
1.0
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM, PerturbedOptimizer, StepStats

__version__ = "0.1.0"

_SUBPACKAGES = ("chapters", "config", "curvature", "engine", "optim", "sgn", "theory")
"""Loaded lazily by attribute access (PEP 562)."""

__all__ = ["MSAM", "NSAM", "RWSAM", "SAM", "PerturbedOptimizer", "StepStats", "__version__"]


def __getattr__(name: str) -> ModuleType:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"sam_tutorial.{name}")
    raise AttributeError(f"module 'sam_tutorial' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBPACKAGES))
