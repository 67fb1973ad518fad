"""Every catalogue experiment is used by the chapter it names, or says why it is for the command line only:
the chapter's notebook names it in a call that runs or loads it, or loads its recorded file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sam_tutorial.engine.catalog.deciding import DECIDING
from sam_tutorial.engine.experiments import EXPERIMENTS

BOOK = Path(__file__).resolve().parents[3] / "book"
CALLS = r"(?:run_experiment|load_results|get_experiment|expected_hash|find_result|read_result|load_recorded)"
NAME = r"\(\s*[\"']([\w.-]+?)(?:-(?:quick|standard|paper))?(?:\.json)?[\"']"
"""A call's first argument: an experiment name, or its recorded file ``NAME-MODE.json``."""


def _code(chapter: str) -> str:
    cells = json.loads((BOOK / f"{chapter}.ipynb").read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def _enumerated(code: str) -> set[str]:
    """Experiments a chapter reaches through one of the catalogue's own lists: the paper's tables
    (``paper_experiments()``) or the deciding experiments (``deciding.DECIDING``)."""
    found = set(DECIDING) if "deciding.DECIDING" in code else set()
    if "paper_experiments()" in code:
        found |= {name for name in EXPERIMENTS if name.startswith("table")}
    return found


def used_by(chapter: str) -> set[str]:
    """Experiment names the chapter's code runs or loads (a call naming it, or its recorded file)."""
    code = _code(chapter)
    called = set(re.findall(CALLS + NAME, code))
    return {n for n in called if n in EXPERIMENTS} | _enumerated(code)


PENDING: dict[str, str] = {}
"""Experiments registered before their chapter's cells exist (a strict xfail: the test fails as soon as
the chapter uses one; then take it off this list)."""


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=f"chapter {PENDING[n]} does not use it yet"))
    if n in PENDING else n for n in EXPERIMENTS])
def test_every_experiment_is_used_by_its_chapter_or_marked_command_line_only(name: str) -> None:
    exp = EXPERIMENTS[name]
    if exp.cli_only:
        assert len(exp.cli_only.split()) >= 4, f"{name}: cli_only must say why no chapter runs it"
        return
    assert exp.chapter and (BOOK / f"{exp.chapter}.ipynb").exists(), f"{name}: no chapter {exp.chapter!r}"
    assert name in used_by(exp.chapter), (
        f"{name} is registered for {exp.chapter} but the notebook neither runs nor loads it; use it there "
        "or mark it cli_only with the reason")


def test_the_check_sees_a_call_and_ignores_a_mere_mention() -> None:
    code = 'run_experiment("escape")\nx = "m-sweep"\nload_recorded(find_result("rw-study-noise-paper.json"))'
    called = set(re.findall(CALLS + NAME, code))
    assert called == {"escape", "rw-study-noise"}
