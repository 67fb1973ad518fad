"""CIFAR-10/100 from the python pickles of the official archives, read with a pickle loader that accepts
arrays and plain data only, so a crafted file cannot run code; every inconsistency (labels that do not
match their images, float pixels, a file of the other CIFAR, a truncated file) is a
:class:`~sam_tutorial.engine.storage.DataFileError` that names the file and what to do.

:func:`download_cifar` (``load_dataset("cifar10", download=True)``, ``sam-tutorial data cifar10``) fetches the
official archive, checks its published MD5, resumes an interrupted download and unpacks it safely
(:mod:`sam_tutorial.engine.download`); or put ``cifar-10-batches-py/`` or ``cifar-100-python/`` in the data
folder (:func:`sam_tutorial.engine.data.data_root`) yourself.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sam_tutorial.config import DATA_ENV
from sam_tutorial.engine.storage import DataFileError

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "SafeUnpickler", "cifar_present", "download_cifar", "safe_load_pickle"]


CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4867, 0.4408)}


CIFAR_STD = {"cifar10": (0.2023, 0.1994, 0.2010), "cifar100": (0.2675, 0.2565, 0.2761)}


_CIFAR: dict[str, dict[str, Any]] = {
    "cifar10": dict(
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        labels="labels",
        classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",  # published by the data set's authors
    ),
    "cifar100": dict(
        folder="cifar-100-python",
        train=["train"],
        test=["test"],
        labels="fine_labels",
        classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


# ----------------------------------------------------------------------------- download
def cifar_present(name: str, folder: str | os.PathLike[str]) -> bool:
    """Whether every training and test file of ``name`` is in ``folder`` (the data folder)."""
    spec = _CIFAR[name]
    base = Path(folder) / str(spec["folder"])
    return all((base / f).is_file() for f in [*spec["train"], *spec["test"]])


def download_cifar(name: str, folder: str | os.PathLike[str], *, url: str | None = None,
                   md5: str | None = None, progress: bool = True) -> Path:
    """Fetch and unpack CIFAR ``name`` into ``folder`` unless it is there already.

    The archive is downloaded to ``folder`` (resumed if a ``.part`` of it is there), checked against the
    published MD5, unpacked all-or-nothing with no member allowed outside ``folder``, checked for every
    expected file, and deleted.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        folder: the data folder; the images end up in ``folder/cifar-10-batches-py`` or
            ``folder/cifar-100-python``.
        url, md5: another source of the same archive and its checksum (default: the official ones).
        progress: show a progress bar.

    Returns:
        The folder that holds the extracted files.

    Raises:
        ValueError: for a name that is not a CIFAR.
        sam_tutorial.engine.download.DownloadError: when the download fails, its checksum differs, or the
            archive has an unsafe member or lacks an expected file.
    """
    from sam_tutorial.engine.download import DownloadError, extract_tar, fetch

    if name not in _CIFAR:
        raise ValueError(f"name must be one of {', '.join(_CIFAR)}; got {name!r}")
    spec = _CIFAR[name]
    folder = Path(folder)
    base = folder / str(spec["folder"])
    if cifar_present(name, folder):
        return base
    source = url or str(spec["url"])
    archive = folder / Path(str(spec["url"])).name
    fetch(source, archive, md5=md5 or str(spec["md5"]), progress=progress)
    extract_tar(archive, folder)
    if not cifar_present(name, folder):
        missing = [f for f in [*spec["train"], *spec["test"]] if not (base / f).is_file()]
        raise DownloadError(f"{source} unpacked into {folder}, but {base} lacks {', '.join(missing)}; is it "
                            f"the {name} archive?")
    archive.unlink()
    return base


# ----------------------------------------------------------------------------- CIFAR
def _numpy_global(submodule: str, name: str) -> Any:
    """``numpy._core.<submodule>.<name>`` (NumPy 2) or ``numpy.core.<submodule>.<name>`` (NumPy 1)."""
    import importlib

    try:
        module = importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # NumPy 1.x
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only NumPy arrays, bytes, lists, dicts, strings and numbers.

    Any other global a pickle names (``os.system``, ``builtins.eval``, a class ...) raises
    :class:`pickle.UnpicklingError` *before* it is called, so a crafted file cannot run code.
    NumPy arrays pickled by NumPy 1 (``numpy.core``) or NumPy 2 (``numpy._core``) are accepted.
    """

    _ALLOWED = {
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: __import__("codecs").encode,  # bytes pickled by Python 3, protocol 2
    }
    _NUMPY = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self._ALLOWED:
            return self._ALLOWED[key]()
        for prefix in ("numpy.core.", "numpy._core."):
            if module.startswith(prefix) and (module[len(prefix) :], name) in self._NUMPY:
                return _numpy_global(module[len(prefix) :], name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only NumPy arrays, bytes, lists, dicts, strings and "
            "numbers are allowed in a data file"
        )


def safe_load_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler` (Python 2 pickles are read as latin-1).

    Raises:
        pickle.UnpicklingError: if the file names anything but arrays and plain data.
        DataFileError: if the file is empty, truncated or not a pickle at all.
    """
    with open(path, "rb") as f:
        try:
            return SafeUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as err:
            if str(err).startswith("refusing"):
                raise pickle.UnpicklingError(f"{path}: {err}") from None
            raise DataFileError(f"{path} is truncated or not a pickle ({err})") from err
        except (EOFError, ValueError, TypeError, IndexError, AttributeError) as err:
            raise DataFileError(f"{path} is truncated or not a pickle ({type(err).__name__}: {err})") from err


def _cifar_file(name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 pixels [N, 3072], int64 labels [N])`` of one CIFAR pickle, checked against each other.

    Raises:
        DataFileError: for an empty or truncated file, a file of the other CIFAR, labels that do not
            match the images one for one, labels out of range, or pixels that are not bytes in [0, 255].
    """
    spec = _CIFAR[name]
    redo = f"delete {path} and extract {spec['url']} again"
    if path.stat().st_size == 0:
        raise DataFileError(f"{path} is empty; {redo}")
    try:
        entry = safe_load_pickle(path)
    except DataFileError as err:
        raise DataFileError(f"{err}; {redo}") from err
    if not isinstance(entry, dict):
        raise DataFileError(f"{path}: expected a dict, found {type(entry).__name__}; {redo}")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    key = str(spec["labels"])
    if key not in entry or "data" not in entry:
        other = next(n for n in _CIFAR if n != name)
        if str(_CIFAR[other]["labels"]) in entry:
            raise DataFileError(
                f"{path} is a {other} file (it has {_CIFAR[other]['labels']!r}, not {key!r}); move it to "
                f"{path.parent.parent / str(_CIFAR[other]['folder'])} and put the {name} files "
                f"({spec['url']}) in {path.parent}")
        raise DataFileError(f"{path} has no {key!r} or no 'data' entry (keys: {sorted(entry)}); {redo}")
    raw = np.asarray(entry["data"])
    if raw.dtype.kind not in "iu":
        raise DataFileError(
            f"{path}: 'data' holds {raw.dtype} pixels; the CIFAR pickles store bytes (uint8 in [0, 255]). "
            "Convert images scaled to [0, 1] with (data * 255).round().astype('uint8'), or " + redo)
    if raw.size and (raw.min() < 0 or raw.max() > 255):
        raise DataFileError(f"{path}: 'data' must hold pixel values in [0, 255], found "
                            f"[{raw.min()}, {raw.max()}]; {redo}")
    if raw.ndim != 2 or raw.shape[1] != 3072:
        raise DataFileError(f"{path}: 'data' must have shape [N, 3072], got {raw.shape}; {redo}")
    labels = np.asarray(entry[key])
    if labels.ndim != 1 or len(labels) != len(raw) or (labels.size and labels.dtype.kind not in "iu"):
        raise DataFileError(f"{path}: {len(labels) if labels.ndim == 1 else labels.shape} labels in {key!r} "
                            f"for {len(raw)} images; each image needs exactly one integer label. {redo}")
    classes = int(spec["classes"])
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataFileError(f"{path}: labels must lie in [0, {classes}) for {name}, found "
                            f"[{labels.min()}, {labels.max()}]; {redo}")
    return raw.astype(np.uint8), labels.astype(np.int64)


def _cifar(name: str, folder: Path) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], dict[str, Any]]:
    spec = _CIFAR[name]
    base = folder / str(spec["folder"])
    files = [base / f for f in [*spec["train"], *spec["test"]]]
    missing = [f.name for f in files if not f.is_file()]
    other = next(n for n in _CIFAR if n != name)
    strays = [f for f in [*_CIFAR[other]["train"], *_CIFAR[other]["test"]] if (base / f).is_file()]
    if missing and strays:
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)} in {base}, which holds {other} files "
            f"({', '.join(strays)}). Move them to {folder / str(_CIFAR[other]['folder'])}, and extract "
            f"{spec['url']} into {folder}."
        )
    if missing:
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)} in {base}. Download {spec['url']} and extract it into "
            f"{folder} (so that {base} exists), or point root= / ${DATA_ENV} at the folder that holds "
            f"{spec['folder']}, or let load_dataset({name!r}, download=True) or `sam-tutorial data {name}` "
            "fetch it."
        )
    mean = torch.tensor(CIFAR_MEAN[name]).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD[name]).view(1, 3, 1, 1)

    def read(names: list[str]) -> tuple[Tensor, Tensor]:
        xs, ys = [], []
        for fname in names:
            data, labels = _cifar_file(name, base / fname)
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(labels)
        images = torch.from_numpy(np.concatenate(xs)).float().div_(255.0)
        return (images - mean) / std, torch.from_numpy(np.concatenate(ys))

    info = {
        "source": str(base),
        "normalise": {"mean": CIFAR_MEAN[name], "std": CIFAR_STD[name]},
    }
    return read(spec["train"]), read(spec["test"]), info
