"""The benchmark: ratios are computed from the measured times, every variant is timed, bad input named."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sam_tutorial.__main__ import main
from sam_tutorial.engine import bench


def test_ratios_are_the_quotients_of_the_times() -> None:
    times = {"sgd": 1.0, "sam": 2.0, "usam": 2.2, "rw-sam": 2.4, "m-sam-m16-loop": 3.0}
    r = bench.ratios(times)
    assert r == {"sam/sgd": 2.0, "usam/sgd": 2.2, "rw-sam/sam": 1.2, "m-sam-m16-loop/sam": 1.5}


def test_variants_cover_the_family_and_skip_m_not_dividing_b() -> None:
    data = (torch.zeros(8, 3), torch.zeros(8, dtype=torch.long))
    names = set(bench.variants(16, (64, 8, 3), ("loop", "vmap"), data))
    assert names == {"sgd", "sam", "usam", "n-sam", "rw-sam", "rw-sam-exact", "m-sam-m8-loop",
                     "m-sam-m8-vmap"}


def test_time_steps_times_every_variant_on_its_own_copy() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    data = (x, y)
    times = bench.time_steps(model, x, y, bench.variants(8, (4,), ("loop", "vmap"), data), rounds=2,
                             warmup=1)
    assert set(times) == {"sgd", "sam", "usam", "n-sam", "rw-sam", "rw-sam-exact", "m-sam-m4-loop",
                          "m-sam-m4-vmap"}
    assert all(t > 0 for t in times.values())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the model is untouched
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        bench.time_steps(model, x, y, {}, rounds=0)


def test_cli_writes_json_with_the_documented_keys(tmp_path, capsys) -> None:
    out = tmp_path / "b.json"
    assert main(["bench", "--device", "cpu", "--model", "mlp", "--batch", "16", "--rounds", "1",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"device", "model", "ratios", "times"} <= set(result)
    assert result["ratios"]["sam/sgd"] == pytest.approx(result["times"]["sam"] / result["times"]["sgd"])
    assert "m-sam-m8-vmap/sam" in result["ratios"]
    assert result["trace_V"]["trace_V/forward_backward"] > 0
    assert "sam/sgd" in capsys.readouterr().out


def test_cli_rejects_unknown_models(capsys) -> None:
    assert main(["bench", "--device", "cpu", "--model", "vgg11"]) == 2
    assert "model must be one of resnet18" in capsys.readouterr().err


RESULT = {
    "device": "cpu: x", "model": "m", "batch": 128,
    "ratios": {"sam/sgd": 2.0, "rw-sam/sam": 1.1, "m-sam-m16-loop/sam": 1.2, "m-sam-m16-vmap/sam": 1.4},
    "times": {}, "trace_V": {"trace_V/forward_backward": 1.5},
}


def test_best_msam_picks_the_faster_backend() -> None:
    assert bench.best_msam(RESULT) == ("loop", 1.2)
    assert bench.best_msam(RESULT, m=8) is None


def test_markdown_table_has_one_row_per_ratio(tmp_path) -> None:
    from sam_tutorial.engine.record import write_result_file
    from sam_tutorial.engine.result_formats import BENCH_FORMAT

    body = {**RESULT, "times": {"sgd": 1.0, "sam": 2.0}}
    for name, device in (("bench-b.json", "cpu: x"), ("bench-a.json", "cuda: y")):
        write_result_file(tmp_path / name, BENCH_FORMAT, {**body, "device": device},
                          command="sam-tutorial bench", device=device, wall_seconds=1.0, commit="abc")
    found = bench.find_results(str(tmp_path))
    assert [r["device"] for r in found] == ["cuda: y", "cpu: x"]  # sorted by file name
    table = bench.markdown_table(found).splitlines()
    assert table[0] == "| ratio | cuda: y (m, B=128) | cpu: x (m, B=128) |"
    assert "| `m-sam-m16-vmap/sam` | 1.40 | 1.40 |" in table
    assert table[-1] == "| `trace_V / forward+backward` | 1.50 | 1.50 |"
    assert len(table) == 2 + 4 + 1


def test_op_counts_record_every_variant_and_no_host_sync_with_or_without_a_scaler() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    factories = bench.variants(16, (4,), ("loop", "vmap"), (x, y))
    ops = bench.op_counts(model, x, y, factories, warmup=2)
    assert set(ops) == set(factories) | {"sam-scaler"}
    assert all(c["syncs"] == 0 for c in ops.values()), {k: c["syncs"] for k, c in ops.items()}
    # SAM is one more forward and backward than rho = 0; views and metadata are dispatched, no kernel
    assert ops["sgd"]["kernels"] < ops["sam"]["kernels"] < ops["sam"]["dispatched"]
    r = bench.op_ratios(ops)
    assert r["m-sam-m4-vmap/sam"] == ops["m-sam-m4-vmap"]["kernels"] / ops["sam"]["kernels"]
