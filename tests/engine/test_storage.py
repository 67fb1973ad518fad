"""Tests for sam_tutorial.engine.storage: atomic writes survive crashes, JSON, hashes, checkpoints, locks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_tutorial.engine.storage import (
    CheckpointError,
    atomic_write,
    config_hash,
    load_checkpoint,
    read_json,
    run_lock,
    save_checkpoint,
    write_json,
)


def test_a_process_killed_while_writing_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_json(path, {"version": 1})
    code = (
        "import os, sys\n"
        "from sam_tutorial.engine.storage import atomic_write\n"
        "def write(f):\n"
        "    f.write(b'{\"version\": 2, \"trunc')\n"
        "    f.flush()\n"
        "    os._exit(9)  # dies mid-write, no clean-up\n"
        f"atomic_write({str(path)!r}, write)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == 9
    assert read_json(path) == {"version": 1}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "result.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".result.json.tmp-")  # ignored by readers


def test_an_exception_while_writing_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)}, "abc")

    def broken(f: object) -> None:
        f.write(b"PK\x03\x04 half a zip")  # type: ignore[attr-defined]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    state = load_checkpoint(path, "abc")
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_json_round_trip_of_the_types_results_hold(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.json"
    write_json(path, {"t": (1, 2), "x": torch.tensor(0.5), "v": torch.tensor([1, 2]), "np": np.float32(0.25),
                      "nan": math.nan, "none": None, "nested": {"k": [np.int64(3)]}})
    back = read_json(path)
    assert back["t"] == [1, 2] and back["x"] == 0.5 and back["v"] == [1, 2] and back["np"] == 0.25
    assert math.isnan(back["nan"]) and back["none"] is None and back["nested"] == {"k": [3]}
    with pytest.raises(TypeError, match="cannot store a object"):
        write_json(path, {"bad": object()})
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected an object"):
        read_json(path)
    path.write_text("{trunc")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json(path)


def test_config_hash_is_canonical_and_stable() -> None:
    a = config_hash({"lr": 0.1, "model": {"width": 8, "norm": "bn"}, "seeds": (0, 1)})
    b = config_hash({"seeds": [0, 1], "model": {"norm": "bn", "width": 8}, "lr": 0.1})
    assert a == b
    assert config_hash({"lr": 0.1000001}) != config_hash({"lr": 0.1})
    # pinned: a change of the canonical form would silently invalidate every cached result
    expected = __import__("hashlib").sha256(json.dumps({"a": 1}, separators=(",", ":")).encode()).hexdigest()
    assert config_hash({"a": 1}) == expected[:12]


def test_checkpoint_refusals(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    with pytest.raises(FileNotFoundError):
        load_checkpoint(path, None)
    save_checkpoint(path, {"w": torch.arange(1000.0)}, "run-a")
    assert torch.equal(load_checkpoint(path, "run-a")["w"], torch.arange(1000.0))
    assert torch.equal(load_checkpoint(path, None)["w"], torch.arange(1000.0))
    with pytest.raises(CheckpointError, match="another run configuration"):
        load_checkpoint(path, "run-b")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path, "run-a")
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a sam_tutorial checkpoint"):
        load_checkpoint(path, "run-a")


def test_run_lock_serialises_holders(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    held, events = threading.Event(), []

    def first() -> None:
        with run_lock(lock):
            held.set()
            time.sleep(0.3)
            events.append(("released", time.monotonic()))

    t = threading.Thread(target=first)
    t.start()
    held.wait()
    with run_lock(lock):
        events.append(("acquired", time.monotonic()))
    t.join()
    assert [e for e, _ in events] == ["released", "acquired"]
