"""Chapter 6's scoreboard: the status rule, the Markdown table, the toy rows."""

from __future__ import annotations

import pytest

from sam_tutorial.chapters import scoreboard as sb


@pytest.mark.parametrize(
    ("a", "b", "sign", "status"),
    [
        ([3.0, 3.1, 2.9], [1.0, 1.1, 0.9], +1, "reproduced"),
        ([3.0, 3.1, 2.9], [1.0, 1.1, 0.9], -1, "contradicted"),
        ([1.0, 2.0, 0.0], [0.9, 1.9, -0.1], +1, "consistent"),  # d = 0.1, SE about 0.8
        ([3.0], [1.0], +1, "consistent"),  # one seed: no standard error
    ],
)
def test_ordering_rule(a: list[float], b: list[float], sign: int, status: str) -> None:
    assert sb.difference(a, b).status(sign) == status


def test_difference_and_equality_rule() -> None:
    d = sb.difference([1.0, 3.0], [0.0, 0.0])
    assert d.diff == pytest.approx(2.0) and d.se == pytest.approx(1.0) and (d.n_a, d.n_b) == (2, 2)
    assert d.equal_status() == "consistent"  # |d| = 2 SE: not beyond
    assert sb.difference([5.0, 5.1], [0.0, 0.1]).equal_status() == "contradicted"
    assert sb.ratio_status(1.2, 7 / 6) == "reproduced" and sb.ratio_status(1.05, 2.0) == "contradicted"
    with pytest.raises(ValueError):
        sb.difference([], [1.0])


def test_markdown_escapes_pipes() -> None:
    row = sb.Row("C1", "a | b", "ch. 2", "toy", "|z| ≤ 2", "reproduced", "here")
    text = sb.markdown([row])
    assert text.splitlines()[0].startswith("| claim |") and "a \\| b" in text and text.count("\n") == 2


def test_toy_rows_are_computed() -> None:
    rows = sb.toy_rows(quick=True, claims=["C3", "C8"])
    assert [r.status for r in rows] == ["reproduced", "reproduced"] and "slope" in rows[0].measured
