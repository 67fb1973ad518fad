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
    plain = sb.markdown([{"x": 1, "y": "p|q"}], ["y", "x"])
    assert plain.splitlines() == ["| y | x |", "|---|---|", "| p\\|q | 1 |"]


def test_toy_rows_are_computed() -> None:
    rows = sb.toy_rows(quick=True, claims=["C3", "C8"])
    assert [r.status for r in rows] == ["reproduced", "reproduced"] and "slope" in rows[0].measured


def test_scoreboard_reads_a_results_folder(tmp_path) -> None:
    """A recorded Table 1 file with the catalogue's hashes becomes measured cells; a stale one does not."""
    import json

    from sam_tutorial.engine.record import write_recorded
    from sam_tutorial.engine.recorded import expected_hash

    exp = "table1-resnet18-cifar10"
    recs = [
        {
            "label": lab,
            "seed": s,
            "config_hash": expected_hash(exp, "paper", lab, s),
            "metrics": {"test_acc": acc + 0.0005 * s},
        }
        for lab, acc in (("sgd", 0.955), ("sam", 0.960), ("rw-sam", 0.963))
        for s in range(3)
    ]
    write_recorded(
        tmp_path / f"{exp}-paper.json",
        exp,
        "paper",
        recs,
        command="test",
        device="none",
        wall_seconds=0.0,
        commit="x",
    )
    cells = [r for r in sb.scoreboard(tmp_path, toy=False) if r.claim == "T1 resnet18 cifar10"]
    assert [r.status for r in cells] == ["reproduced", "reproduced"]
    stale = json.loads((tmp_path / f"{exp}-paper.json").read_text())
    stale["records"][0]["config_hash"] = "000000000000"
    (tmp_path / f"{exp}-paper.json").write_text(json.dumps(stale))
    cells = [r for r in sb.scoreboard(tmp_path, toy=False) if r.claim == "T1 resnet18 cifar10"]
    assert {r.status for r in cells} == {"not attempted"}
