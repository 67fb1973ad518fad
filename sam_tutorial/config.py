"""Run-time configuration: the mode, the device, seeding, and per-chapter budgets.

The mode sets the scale of every experiment in the book and is read from one environment variable,
``SAM_TUTORIAL_MODE``; this module is the only place that reads it.

========== ===================== ===============================================================
mode       used by               budget
========== ===================== ===============================================================
quick      CI (nbmake), smoke    each notebook <= 60 s on 2 CPU cores; numbers not meaningful
standard   ``make book``, Colab  each notebook <= 3 min on 2 CPU cores; results meaningful
paper      the CLI on a GPU      the paper's configurations (CIFAR, ResNet/WRN, 200 epochs)
========== ===================== ===============================================================

A chapter declares what each mode means for it once, in its ``parameters`` cell:

>>> import os
>>> os.environ["SAM_TUTORIAL_MODE"] = "quick"
>>> b = budget("ch04", quick=dict(epochs=2, seeds=1), standard=dict(epochs=40, seeds=3))
>>> b.epochs, b.seeds, b.seconds
(2, 1, 60.0)
>>> del os.environ["SAM_TUTORIAL_MODE"]
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

Mode = Literal["quick", "standard", "paper"]

__all__ = [
    "DATA_ENV",
    "DEFAULT_MODE",
    "DEVICE_ENV",
    "INSTALL_ENV",
    "REPOSITORY",
    "MODES",
    "MODE_ENV",
    "NOTEBOOK_SECONDS",
    "Budget",
    "Inputs",
    "LossFn",
    "MissingExtra",
    "Mode",
    "UserError",
    "as_tuple",
    "banner",
    "budget",
    "check_batch",
    "check_bool",
    "check_device",
    "check_float_dtype",
    "check_folder",
    "check_int",
    "check_nonneg",
    "check_seed",
    "check_tensor",
    "device",
    "mode",
    "require",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]

MODES: tuple[str, ...] = get_args(Mode)
"""The valid values of ``SAM_TUTORIAL_MODE``, smallest scale first."""

DEFAULT_MODE: Mode = "standard"
MODE_ENV = "SAM_TUTORIAL_MODE"
DEVICE_ENV = "SAM_TUTORIAL_DEVICE"
DATA_ENV = "SAM_TUTORIAL_DATA"
"""The environment variable that names the data folder."""

REPOSITORY = "https://github.com/sam-tutorial/sam_tutorial"
"""The project's repository, stated here once. The notebooks' bootstrap cells install from
``git+REPOSITORY`` (a notebook on Colab cannot import the package before installing it, so each cell carries
a copy), ``_config.yml``'s ``repository.url`` builds the launch buttons, and ``pyproject.toml`` lists it;
``tests/test_colab.py`` checks that every copy equals this one."""

INSTALL_ENV = "SAM_TUTORIAL_INSTALL"
"""The environment variable a bootstrap cell reads for where to install the package from instead of
``git+REPOSITORY``: any pip URL (a fork, ``git+...@tag``, ``file:///path/to/checkout`` or a wheel)."""

NOTEBOOK_SECONDS: Mapping[str, float | None] = MappingProxyType(
    {"quick": 60.0, "standard": 180.0, "paper": None}
)
"""Wall-clock budget of one notebook per mode on 2 CPU cores (``None``: no limit)."""


class UserError(ValueError):
    """A mistake in what the user gave (an argument, a flag, an environment variable, a path).

    A ``ValueError``, so code that catches those keeps working; the command line
    (:mod:`sam_tutorial.__main__`) prints it as one line ``error: ...`` and exits with status 2, without
    a traceback. Its message names the input and what to do.
    """


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it
    (the command line prints it as one ``error:`` line, status 2)."""


def mode() -> Mode:
    """Return the current mode, read from ``SAM_TUTORIAL_MODE`` (default ``"standard"``).

    Raises:
        ValueError: if the variable holds anything but ``quick``, ``standard`` or ``paper``.
    """
    value = os.environ.get(MODE_ENV, "").strip().lower()
    if not value:
        return DEFAULT_MODE
    if value not in MODES:
        raise UserError(
            f"{MODE_ENV}={os.environ[MODE_ENV]!r} is not a valid mode; "
            f"accepted values: {', '.join(MODES)} (unset means {DEFAULT_MODE!r})"
        )
    return value  # type: ignore[return-value]


def device() -> torch.device:
    """Return the device experiments run on: ``SAM_TUTORIAL_DEVICE`` if set, else CUDA if available.

    Raises:
        ValueError: if ``SAM_TUTORIAL_DEVICE`` is not a device this machine can train on (see
            :func:`check_device`), e.g. ``cuda`` without CUDA, ``mps`` without MPS, or ``meta``.
    """
    requested = os.environ.get(DEVICE_ENV, "").strip()
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(DEVICE_ENV, requested)


def check_device(name: str, value: object) -> torch.device:
    """``value`` as a :class:`torch.device` that this machine can compute on, else ``ValueError``
    naming ``name``: not a device string, ``meta`` (no data), CUDA/MPS/XPU that is not available, or a
    CUDA index beyond the devices present.

    >>> check_device("device", "cpu")
    device(type='cpu')
    """
    accepted = "accepted values look like 'cpu', 'cuda', 'cuda:0' or 'mps', for a device this machine has"
    try:
        dev = value if isinstance(value, torch.device) else torch.device(value)  # type: ignore[call-overload]
    except (RuntimeError, TypeError) as err:
        raise UserError(f"{name}={value!r} is not a torch device; {accepted}") from err
    if dev.type == "meta":
        raise UserError(f"{name}={value!r}: the meta device holds no data and cannot train; {accepted}")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "xpu": hasattr(torch, "xpu") and torch.xpu.is_available(),
    }
    if not available.get(dev.type, False):
        have = ", ".join(k for k, v in available.items() if v)
        raise UserError(f"{name}={value!r} but {dev.type.upper()} is not available on this machine "
                         f"(available: {have}); {accepted}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"{name}={value!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                         f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators (all devices) with ``seed``.

    Returns a fresh CPU :class:`torch.Generator` seeded with ``seed`` for code that prefers an
    explicit generator over the global one.

    Raises:
        ValueError: if ``seed`` is not an integer in ``[0, 2**32)``.
    """
    seed = check_seed("seed", seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too
    return torch.Generator().manual_seed(seed)


def banner() -> str:
    """One line naming the mode, the device and the torch version; every notebook prints it.

    >>> banner().startswith("mode=")
    True
    """
    return f"mode={mode()} device={device()} torch={torch.__version__}"


@dataclass(frozen=True)
class Budget:
    """The settings of one chapter for the current mode; knobs are read as attributes.

    Attributes:
        chapter: the chapter's name, e.g. ``"ch04"``.
        mode: the mode the settings were chosen for.
        seconds: the notebook's wall-clock budget in that mode (``None``: unlimited).
        knobs: the chapter's settings for that mode (epochs, seeds, sizes, ...).
    """

    chapter: str
    mode: Mode
    seconds: float | None
    knobs: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        knobs = object.__getattribute__(self, "knobs")
        if name in knobs:
            return knobs[name]
        raise AttributeError(
            f"budget {self.chapter!r} has no setting {name!r}; it has: {', '.join(sorted(knobs))}"
        )


def budget(
    chapter: str,
    *,
    quick: Mapping[str, Any],
    standard: Mapping[str, Any],
    paper: Mapping[str, Any] | None = None,
    current: Mode | None = None,
) -> Budget:
    """Choose a chapter's settings for the current mode.

    Every mode must define the same settings, so that a notebook cannot work in one mode and fail
    with a missing name in another. ``paper`` defaults to ``standard`` (on a GPU the standard mode
    runs faster, not bigger).

    Args:
        chapter: the chapter's name (used in messages).
        quick: settings for CI (``quick`` mode).
        standard: settings for the built book and for readers.
        paper: settings for the paper's scale; defaults to ``standard``.
        current: the mode to choose for; defaults to :func:`mode`.

    Raises:
        ValueError: if the modes do not define the same settings, or ``current`` is not a mode.
    """
    per_mode: dict[str, Mapping[str, Any]] = {
        "quick": quick,
        "standard": standard,
        "paper": standard if paper is None else paper,
    }
    keys = set(standard)
    for name, knobs in per_mode.items():
        if set(knobs) != keys:
            missing, extra = sorted(keys - set(knobs)), sorted(set(knobs) - keys)
            raise ValueError(
                f"budget {chapter!r}: mode {name!r} must define the same settings as 'standard' "
                f"(missing: {missing}, extra: {extra})"
            )
    chosen = mode() if current is None else current
    if chosen not in MODES:
        raise ValueError(f"current={chosen!r} is not a mode; accepted values: {', '.join(MODES)}")
    return Budget(
        chapter=chapter,
        mode=chosen,
        seconds=NOTEBOOK_SECONDS[chosen],
        knobs=MappingProxyType(dict(per_mode[chosen])),
    )


# ---------------------------------------------------------------- generator state (checkpoints)
def rng_state() -> dict[str, Any]:
    """The state of every global generator (torch, CUDA, NumPy, Python) as a checkpointable dict."""
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "python": [py[0], list(py[1]), py[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- argument checks shared by the package
Inputs = Tensor | tuple[Tensor, ...]
"""A tensor or a tuple of tensors, the batch on dim 0."""


LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(outputs, targets) -> per-sample losses [B]``."""


def check_int(name: str, value: object, low: int = 1) -> int:
    """``value`` if it is an integer >= ``low`` (not a bool), else ``ValueError`` naming ``name``.

    >>> check_int("k", 3)
    3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_nonneg(name: str, value: object, *, positive: bool = False, below: float | None = None) -> float:
    """``value`` as a float if it is a finite real number >= 0 (> 0 with ``positive``, < ``below`` when
    given), not a bool; else ``ValueError`` naming ``name`` and the accepted range. NumPy scalars are
    accepted.

    >>> check_nonneg("rho", 0.05), check_nonneg("eta", 1, positive=True), check_nonneg("beta", 0.9, below=1)
    (0.05, 1.0, 0.9)
    """
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or number < 0 or (positive and number == 0) or (below is not None
                                                                                   and number >= below):
        if below is not None:
            raise UserError(f"{name} must be a finite number in {'(' if positive else '['}0, {below:g}), "
                             f"got {value!r}")
        raise UserError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return number


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool, else ``ValueError`` naming ``name`` (a string such as ``"False"`` is
    true in Python, so it is refused rather than guessed).

    >>> check_bool("augment", False)
    False
    """
    if not isinstance(value, bool | np.bool_):
        raise UserError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_seed(name: str, value: object) -> int:
    """``value`` as an int if it is an integer in ``[0, 2**32)`` (NumPy integers accepted, not a bool),
    the range every generator (Python, NumPy, torch) accepts; else ``ValueError`` naming ``name``.

    >>> check_seed("seed", 7)
    7
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < 2**32:
        raise UserError(f"{name} must be an integer in [0, 2**32), got {value!r}")
    return int(value)


def check_tensor(name: str, value: object, *, floating: bool = False, finite: bool = False) -> Tensor:
    """``value`` if it is a torch tensor (with a floating dtype / only finite entries when asked), else
    ``UserError`` naming ``name`` and what to do. A NumPy array is refused with the conversion to use
    (``torch.from_numpy``): converting silently would hide a float64/int64 dtype the caller did not
    mean.

    >>> check_tensor("grads", torch.ones(2), floating=True, finite=True)
    tensor([1., 1.])
    """
    if not isinstance(value, Tensor):
        numpy = type(value).__module__.split(".")[0] == "numpy"
        hint = ("; it is a NumPy array: pass torch.from_numpy(...) (with .float() for float32)" if numpy
                else "")
        raise UserError(f"{name} must be a torch.Tensor, got {type(value).__name__}{hint}")
    if floating and not value.is_floating_point():
        raise UserError(f"{name} must have a floating dtype (float32 or float64), got {value.dtype}; an "
                        "integer tensor would round every mean and weight to an integer (convert with "
                        ".float())")
    if finite and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise UserError(f"{name} holds {bad} non-finite value(s) (NaN or inf); the result would be NaN or "
                        "meaningless: find where they come from (a diverged model, a bad input)")
    return value


def check_folder(name: str, path: str | os.PathLike[str], *, writable: bool = False) -> Path:
    """``path`` (``~`` expanded) if it is a folder or can be created as one (with ``writable``: by this
    user), else ``UserError`` naming ``name``: an empty path (the working directory by accident), an
    existing file, a file where a parent folder should be, a folder without write permission.
    Nothing is created.

    >>> check_folder("--out", "/tmp/some/new/folder").name
    'folder'
    """
    if not str(os.fspath(path)).strip():
        raise UserError(f"{name} {os.fspath(path)!r} names no folder (it would mean the working directory); "
                        "give a folder path")
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{name} {folder} is a file; give a folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{name} {folder} cannot be created: {existing} is a file, not a folder")
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        made = "is" if existing == folder else f"cannot be created: {existing} is"
        raise UserError(f"{name} {folder} {made} not writable by this user; choose another folder")
    return folder


def check_float_dtype(name: str, dtype: object) -> torch.dtype:
    """``dtype`` if it is a real floating torch dtype, else ``UserError`` naming ``name``.

    >>> check_float_dtype("dtype", torch.float64)
    torch.float64
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise UserError(f"{name} must be a floating torch dtype (torch.float32 or torch.float64), got "
                        f"{dtype!r}; an integer dtype would truncate every weight and probability to 0")
    return dtype


def as_tuple(inputs: Inputs) -> tuple[Tensor, ...]:
    """``inputs`` as a tuple of tensors (a single tensor becomes a 1-tuple)."""
    return inputs if isinstance(inputs, tuple) else (inputs,)


def check_batch(inputs: tuple[Tensor, ...], targets: Tensor | None = None) -> int:
    """The batch size of ``inputs`` and ``targets`` (dim 0; ``targets=None`` for inputs alone).

    Raises:
        ValueError: if there are no inputs, no samples, or the inputs and targets disagree on it.

    >>> check_batch((torch.zeros(3, 2),), torch.zeros(3))
    3
    """
    if len(inputs) == 0:
        raise ValueError("inputs must be a tensor or a non-empty tuple of tensors")
    for i, t in enumerate(inputs):
        check_tensor("inputs" if len(inputs) == 1 else f"inputs[{i}]", t)
    if targets is not None:
        check_tensor("targets", targets)
    size = inputs[0].shape[0] if inputs[0].dim() > 0 else 0
    if size == 0:
        raise ValueError("inputs must hold at least one sample (batch on dim 0)")
    for t in (*inputs[1:], *([] if targets is None else [targets])):
        if t.dim() == 0 or t.shape[0] != size:
            raise ValueError(
                f"inputs and targets must share the batch size on dim 0; got {size} and {tuple(t.shape)}"
            )
    return size


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise an ``ImportError`` that names the extra providing it.

    The core install is torch, numpy and tqdm; ``data`` adds mnist1d, ``notebook`` matplotlib and
    ipywidgets (what a chapter needs on Colab: ``pip install "sam_tutorial[notebook,data]"``), ``book``
    also Jupyter Book.

    >>> require("math", "data").sqrt(4.0)
    2.0
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(
            f"{module.split('.')[0]} is not installed; it comes with the {extra!r} extra: "
            f'pip install "sam_tutorial[{extra}]"'
        ) from err
