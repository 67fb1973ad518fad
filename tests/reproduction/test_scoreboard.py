"""Chapter 6's scoreboard: the status rule on paired comparisons, the Markdown table, the toy rows."""

from __future__ import annotations

import json

import pytest

from sam_tutorial import stats
from sam_tutorial.engine.record import write_recorded
from sam_tutorial.engine.recorded import expected_hash
from sam_tutorial.reproduction import scoreboard as sb


def _seeds(values: list[float]) -> dict[int, float]:
    return dict(enumerate(values))


@pytest.mark.parametrize(
    ("a", "b", "sign", "status"),
    [
        ([3.0, 3.1, 2.9], [1.0, 1.1, 0.9], +1, "reproduced"),
        ([3.0, 3.1, 2.9], [1.0, 1.1, 0.9], -1, "contradicted"),
        ([3.0, 3.1, 2.9], [1.0, 1.1, 0.9], 0, "contradicted"),
        ([1.0, 2.0, 0.0], [0.9, 1.9, -0.1], +1, "reproduced"),  # d = 0.1 every seed: an effect, if small
        ([1.0, 2.0, 0.0, 4.0], [0.99, 2.01, 0.005, 3.995], +1, "contradicted"),  # powered to see 0.5: none
        ([1.0, 2.0, 0.5], [0.9, 2.3, 0.2], +1, "underpowered"),  # d = 0.1, -0.3, 0.3: wide interval
        ([3.0], [1.0], +1, "underpowered"),  # one seed: no interval
    ],
)
def test_ordering_rule(a: list[float], b: list[float], sign: int, status: str) -> None:
    assert sb.compare(_seeds(a), _seeds(b), sign, min_effect=0.5).status == status


def test_rule_follows_stats_decide_and_pairs_by_seed() -> None:
    a = {0: 1.00, 1: 2.00, 2: 3.00, 3: 4.00, 4: 5.00, 5: 6.00}
    b = {0: 1.01, 1: 1.99, 2: 3.02, 3: 3.98, 4: 5.01, 5: 5.99, 9: 100.0}  # seed 9 has no partner
    c = sb.compare(a, b, 0, min_effect=0.1)
    assert c.decision == stats.decide(stats.paired_differences(a, b), 0.1)
    assert c.status == "consistent" and c.decision.interval.n == 6  # unpaired, the spread would hide it
    assert "6 paired seeds" in c.text()
    with pytest.raises(ValueError, match="sign"):
        sb.compare(a, b, 2, min_effect=0.1)
    assert sb.ratio_status(1.2, 7 / 6) == "reproduced" and sb.ratio_status(1.05, 2.0) == "contradicted"
    assert [sb.check_status(p) for p in (True, False, None)] == ["reproduced", "contradicted", "underpowered"]


def test_markdown_escapes_pipes() -> None:
    row = sb.Row("C1", "a | b", "ch. 2", "toy", "|z| ≤ 2", "reproduced", "here")
    text = sb.markdown([row])
    assert text.splitlines()[0].startswith("| claim |") and "a \\| b" in text and text.count("\n") == 2
    plain = sb.markdown([{"x": 1, "y": "p|q"}], ["y", "x"])
    assert plain.splitlines() == ["| y | x |", "|---|---|", "| p\\|q | 1 |"]


def test_toy_rows_are_computed() -> None:
    rows = sb.toy_rows(checks=["c34_drift_order", "c8_gibbs_weights"])
    assert [r.claim for r in rows] == ["C3", "C4", "C8"]
    assert {r.status for r in rows} == {"reproduced"} and "slope" in rows[0].measured


def test_scoreboard_reads_a_results_folder(tmp_path) -> None:
    """A recorded Table 1 file with the catalogue's hashes becomes measured cells; a stale one does not."""
    exp = "table1-resnet18-cifar10"
    jitter = (0.0, 0.0004, -0.0003)
    recs = [
        {
            "label": lab,
            "seed": s,
            "config_hash": expected_hash(exp, "paper", lab, s),
            "metrics": {"test_acc": acc + jitter[s] + (0.0002 * s if lab == "sam" else 0.0)},
        }
        for lab, acc in (("sgd", 0.955), ("sam", 0.960), ("rw-sam", 0.963))
        for s in range(3)
    ]
    path = tmp_path / f"{exp}-paper.json"
    write_recorded(path, exp, "paper", recs, command="test", device="none", wall_seconds=0.0, commit="x")
    cells = [
        r
        for r in sb.scoreboard(tmp_path, toy=False)
        if r.claim == "T1" and r.statement.startswith("resnet18 cifar10:")
    ]
    assert [r.status for r in cells] == ["reproduced", "reproduced"]
    stale = json.loads(path.read_text())
    stale["records"][0]["config_hash"] = "000000000000"
    path.write_text(json.dumps(stale))
    cells = [
        r
        for r in sb.scoreboard(tmp_path, toy=False)
        if r.claim == "T1" and r.statement.startswith("resnet18 cifar10:")
    ]
    assert {r.status for r in cells} == {"not at this scale"}
