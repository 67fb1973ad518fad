"""Crash-safe files: atomic writes, JSON results, training checkpoints, per-run locks, config hashes.

Every file the engine writes goes through :func:`atomic_write`: the bytes go to a temporary file in the
same folder, are flushed to disk, and the temporary file then *replaces* the target with
``os.replace`` (atomic on POSIX and Windows). A process killed at any moment therefore leaves
either the previous file or the new one, never a truncated mix. Stray temporary files
(``.<name>.tmp-*``) from a killed writer are ignored by readers.

Checkpoints are written with :func:`torch.save` and read back with ``torch.load(weights_only=True)``,
which unpickles only tensors and plain containers; a checkpoint also carries a format tag and the
fingerprint of the run that wrote it, so a corrupted file or one written by another configuration is
refused with :class:`CheckpointError` instead of being resumed from.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "result.json"
>>> write_json(path, {"acc": 0.5})
>>> read_json(path)
{'acc': 0.5}
>>> len(config_hash({"lr": 0.1, "epochs": 2}))
12
"""


from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch

from sam_tutorial.config import check_folder

__all__ = [
    "DataFileError",
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "ResultFileError",
    "atomic_write",
    "check_model_state",
    "config_hash",
    "load_checkpoint",
    "read_json",
    "run_lock",
    "save_checkpoint",
    "write_json",
]


CHECKPOINT_FORMAT = "sam_tutorial.checkpoint/1"
"""Format tag stored in every checkpoint; anything else is refused."""


class DataFileError(ValueError):
    """A data file that is there but cannot be used: empty, truncated, of another data set, or holding
    arrays that disagree; the message names the file and what to do."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, corrupted, or written by another run."""


class ResultFileError(ValueError):
    """A cached result file that exists but lacks what a result holds (edited, or of an older format)."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file atomically: ``write(f)`` fills a temporary file that then replaces ``path``.

    If ``write`` raises (or the process dies) the previous content of ``path`` is untouched; the
    temporary file is removed when the failure is an exception.

    Args:
        path: the file to (re)place; its folder is created if needed.
        write: called with a binary file object open for writing.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder; give a file path")
    check_folder("the folder of " + str(path), path.parent)  # a file where a folder should be, named
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp creates 0600; a new file gets what open() would give it
            os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _file_mode(path: Path) -> int:
    """The permission bits ``path`` gets: those it has if it exists, else 0666 less the umask (what a
    plain ``open(path, "w")`` would create), so a shared runs folder stays readable to the group."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _jsonable(value: Any) -> Any:
    """Plain JSON types from tuples, numpy scalars and tensors (NaN/inf kept, as Python's json does)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a JSON result: {value!r}")


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically (see :func:`atomic_write`)."""
    text = json.dumps(_jsonable(data), indent=1, sort_keys=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_json`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ResultFileError: (a ``ValueError``) if the file is not a JSON object.
    """
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ResultFileError(f"{path} is not valid JSON ({err}); delete it to recompute") from err
    if not isinstance(data, dict):
        raise ResultFileError(f"{path} holds a JSON {type(data).__name__}, expected an object; delete it "
                              "to recompute")
    return data


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """A short, stable hash of a JSON-able configuration (key order does not matter).

    Args:
        config: nested mappings/sequences of plain values.
        length: number of hexadecimal digits kept.

    Returns:
        The first ``length`` hex digits of the SHA-256 of the canonical JSON.
    """
    canonical = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any], fingerprint: str) -> None:
    """Save a training state atomically, tagged with the format and the run's ``fingerprint``.

    Args:
        path: the checkpoint file.
        state: tensors and plain containers only (what ``torch.load(weights_only=True)`` accepts).
        fingerprint: identifies the run configuration; :func:`load_checkpoint` compares it.
    """
    payload = {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "state": dict(state)}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(
    path: str | os.PathLike[str], fingerprint: str | None, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` and check that it belongs to this run.

    Args:
        path: the checkpoint file.
        fingerprint: the expected fingerprint (``None``: accept any run's checkpoint).
        map_location: passed to :func:`torch.load`.

    Returns:
        The ``state`` mapping that was saved.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        CheckpointError: if the file is corrupted, not a sam_tutorial checkpoint, or was written by a
            run with another fingerprint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, disallowed globals ...
        raise CheckpointError(
            f"cannot read the checkpoint {path} ({type(err).__name__}: {str(err)[:200]}); it is corrupted "
            "or not a sam_tutorial checkpoint. Delete it to start this run from scratch."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a sam_tutorial checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r}); "
            "delete it or choose another output folder"
        )
    if fingerprint is not None and payload.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{path} was written by another run configuration (fingerprint {payload.get('fingerprint')!r}, "
            f"this run is {fingerprint!r}); delete it or choose another output folder"
        )
    return payload["state"]


def check_model_state(
    model: torch.nn.Module, state: Mapping[str, Any], source: str | os.PathLike[str]
) -> None:
    """Refuse a model ``state_dict`` that does not fit ``model`` key for key and shape for shape, before
    anything is loaded (``load_state_dict`` copies the entries that fit before it raises on the others).

    Args:
        model: the module the state is meant for.
        state: a ``state_dict`` (e.g. a checkpoint's ``"model"``).
        source: where the state comes from (a file, ``"init_state"``), named in the message.

    Raises:
        CheckpointError: on a missing or unexpected key, or a tensor of another shape; the message names
            ``source`` and the first differences (typically a checkpoint of another architecture).
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: the model state is a {type(state).__name__}, not a state_dict")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} here {tuple(own[k].shape)}" for k in own
              if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape]
    wrong_type = [k for k in own if k in state and not isinstance(state[k], torch.Tensor)]
    if missing or unexpected or shapes or wrong_type:
        parts = [f"{label} {items[:4]}{' ...' if len(items) > 4 else ''}" for label, items in (
            ("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", shapes),
            ("not tensors", wrong_type)) if items]
        raise CheckpointError(
            f"{source} holds the weights of another architecture ({'; '.join(parts)}); nothing was loaded. "
            "Use a checkpoint of this model, or delete it to start this run from scratch."
        )


@contextlib.contextmanager
def run_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the ``with`` block.

    A second process asking for the same lock waits until the first releases it (also when the first
    is killed: the operating system drops the lock with the process). The file is removed on release,
    so a finished or failed run leaves no ``.lock`` behind (one killed mid-run leaves an unlocked file,
    which the next run takes over). Where ``fcntl`` is unavailable
    (Windows) this is a no-op and concurrent runs rely on atomic writes alone.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(path, "a+b")  # noqa: SIM115 - closed below, after the unlink
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()  # the holder before us removed this file: lock the new one
    try:
        yield
    finally:
        # remove the file while still holding it, so that no lock file outlives the run; a waiter that
        # opened the removed file notices above and retries on a fresh one
        with contextlib.suppress(OSError):
            os.unlink(path)
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()
