"""The UNCONFIRMED register reads its defaults from the code; the scan finds every mention."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from sam_tutorial.optim import RWSAM
from sam_tutorial.reproduction import unconfirmed
from sam_tutorial.theory import sde


def test_register_defaults_are_read_from_signatures() -> None:
    rows = {r["option"]: r for r in unconfirmed.register()}
    params = inspect.signature(RWSAM.__init__).parameters
    assert rows["RWSAM(weighted_descent=...)"]["default"] == str(params["weighted_descent"].default)
    assert rows["RWSAM(delta=...), TrainConfig(delta=...)"]["default"] == str(params["delta"].default)
    assert rows["sde.drift(include_eta_term=...)"]["default"] == str(
        inspect.signature(sde.drift).parameters["include_eta_term"].default
    )
    assert all(r["chapter"] and r["default"] for r in rows.values())


def test_scan_finds_mentions_and_skips_its_own_files(tmp_path: Path) -> None:
    (tmp_path / "sam_tutorial" / "reproduction").mkdir(parents=True)
    (tmp_path / "book").mkdir()
    (tmp_path / "sam_tutorial" / "m.py").write_text("x = 1\n# the radius is\n# UNCONFIRMED here\n")
    (tmp_path / "sam_tutorial" / "reproduction" / "unconfirmed.py").write_text("# UNCONFIRMED\n")
    cell = {"cell_type": "markdown", "source": ["intro\n", "λ is UNCONFIRMED.\n"]}
    (tmp_path / "book" / "01.ipynb").write_text(json.dumps({"cells": [cell]}))
    (tmp_path / "book" / "_template.ipynb").write_text(json.dumps({"cells": [cell]}))  # not a chapter
    found = unconfirmed.scan(tmp_path)
    assert [(m.path, m.line) for m in found] == [("sam_tutorial/m.py", 3), ("book/01.ipynb", 2)]
    assert "the radius is" in found[0].text  # the line above is kept as context
