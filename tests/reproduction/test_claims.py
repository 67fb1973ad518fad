"""The claims registry: one status vocabulary, the rule from rows to a claim's status, the list of
failures, and book/claims.md generated from them (equal to what chapter 6's scoreboard computes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sam_tutorial.reproduction import claims
from sam_tutorial.reproduction.claims import Row

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["reproduced", "reproduced"], "reproduced"),
        (["reproduced", "consistent"], "reproduced"),
        (["consistent"], "consistent"),
        (["reproduced", "contradicted"], "partly"),
        (["reproduced", "underpowered"], "partly"),
        (["consistent", "not at this scale"], "partly"),
        (["contradicted", "underpowered"], "contradicted"),
        (["contradicted"], "contradicted"),
        (["underpowered", "not at this scale"], "underpowered"),
        (["not at this scale", "not attempted"], "not at this scale"),
        (["not attempted"], "not attempted"),
    ],
)
def test_claim_status(statuses: list[str], expected: str) -> None:
    assert claims.claim_status(statuses) == expected


def test_claim_status_rejects_other_words() -> None:
    with pytest.raises(ValueError, match="statuses"):
        claims.claim_status(["passed"])
    with pytest.raises(ValueError):
        claims.claim_status([])


def _row(claim: str, status: str, text: str = "x") -> Row:
    return Row(claim, text, "ch. 1", "toy", "m", status, "s")


def test_failures_lists_contradicted_rows_and_the_gaps_of_partly_claims() -> None:
    rows = [
        _row("C2", "reproduced"),
        _row("C1", "reproduced", "a"),
        _row("C1", "underpowered", "b"),  # C1 is partly: its underpowered row is listed
        _row("C3", "underpowered"),  # C3 is only underpowered: not a failure
        _row("T1", "contradicted"),
        _row("C6", "contradicted", "c"),
    ]
    listed = [(r.claim, r.statement) for r in claims.failures(rows)]
    assert listed == [("C1", "b"), ("C6", "c"), ("T1", "x")]  # in registry order
    assert claims.statuses_by_claim(rows) == {
        "C1": "partly",
        "C2": "reproduced",
        "C3": "underpowered",
        "C6": "contradicted",
        "T1": "contradicted",
    }
    with pytest.raises(ValueError, match="registry"):
        claims.statuses_by_claim([_row("C99", "reproduced")])


def test_page_names_every_claim_and_failure() -> None:
    rows = [_row("C6", "reproduced", "valley"), _row("C6", "contradicted", "escape | n-SAM")]
    page = claims.claims_page(rows)
    assert (
        all(f"| {key} |" in page for key in claims.CLAIMS)
        and "| C6 | contradicted | escape \\| n-SAM |" in page
    )
    assert "| partly |" in page and page.count("| not attempted |") == len(claims.CLAIMS) - 1 + 4


def test_every_toy_check_exists_and_belongs_to_a_claim() -> None:
    from sam_tutorial.reproduction import toy_checks

    for spec in claims.TOY_CHECKS:
        assert spec.claim in claims.CLAIMS and callable(getattr(toy_checks, spec.function))


@pytest.mark.slow
def test_claims_page_is_the_scoreboard() -> None:
    """book/claims.md equals the page rendered from the scoreboard computed now (toy checks rerun, recorded
    results loaded): statuses and the list of failures cannot drift from chapter 6."""
    spec = importlib.util.spec_from_file_location("claims_page", ROOT / "tools" / "claims_page.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert (ROOT / "book" / "claims.md").read_text() == tool.page(), "run `python tools/claims_page.py`"
