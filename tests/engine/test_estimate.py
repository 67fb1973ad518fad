"""Device-hour estimates from step times (engine/estimate.py): the three file formats, the derivations
for keys a file does not hold, and a run's hours from its configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sam_tutorial.engine import estimate
from sam_tutorial.engine.estimate import StepTimes, run_seconds, step_seconds, timing_key
from sam_tutorial.engine.recorded import packaged_results
from sam_tutorial.engine.runs import DataSpec
from sam_tutorial.engine.train_config import TrainConfig

RESULTS = packaged_results()


def test_timing_keys_name_the_cost_not_the_reading() -> None:
    rw = dict(optimizer="rw-sam", rho=0.05, lam=0.8, delta=0.01)
    weighted = TrainConfig(**rw, options={"weighted_descent": True, "standardize": True})  # type: ignore[arg-type]
    assert timing_key(TrainConfig(**rw)) == timing_key(weighted) == "rw-sam"  # type: ignore[arg-type]
    assert timing_key(TrainConfig(optimizer="m-sam", rho=0.1, m=8), "cpu") == "m-sam-m8-loop"
    loop = TrainConfig(optimizer="m-sam", rho=0.1, m=64, options={"backend": "loop"})
    assert timing_key(loop) == "m-sam-m64-loop"
    assert timing_key(TrainConfig(optimizer="n-sam", rho=0.1, nsam_samples=1024)) == "n-sam-n1024"
    assert timing_key(TrainConfig(optimizer="usam", rho=0.1)) == "sam"


def test_derived_keys_follow_the_pass_count() -> None:
    t = StepTimes("cuda: x", {"r": {"sgd": 1.0, "sam": 2.0, "m-sam-m64-loop": 3.0, "m-sam-m32-vmap": 5.0,
                                   "n-sam-n512": 6.0}})
    # loop: SAM + (k - 1) x the cost of one extra micro-batch, fitted from k = 2
    loop = step_seconds(t, "r", TrainConfig(optimizer="m-sam", rho=0.1, m=16, options={"backend": "loop"}))
    assert loop is not None and loop[0] == pytest.approx(2.0 + 7 * 1.0)
    # vmap: the nearest measured m
    vmap = step_seconds(t, "r", TrainConfig(optimizer="m-sam", rho=0.1, m=8, options={"backend": "vmap"}))
    assert vmap is not None and vmap[0] == 5.0
    # n-SAM: (n - n0) / B more SGD passes
    nsam = step_seconds(t, "r", TrainConfig(optimizer="n-sam", rho=0.1, nsam_samples=1024))
    assert nsam is not None and nsam[0] == pytest.approx(6.0 + 512 / 128 * 1.0)
    assert step_seconds(t, "r", TrainConfig(optimizer="sam", rho=0.1)) == (2.0, "measured")


def test_an_unmeasured_model_is_scaled_by_flops_and_says_so() -> None:
    t = StepTimes("cuda: x", {"resnet18": {"sgd": 1.0, "sam": 2.0}}, {"resnet18": 3.0, "wrn28-10": 30.0})
    found = step_seconds(t, "wrn28-10", TrainConfig(optimizer="sam", rho=0.1))
    assert found is not None and found[0] == pytest.approx(20.0) and "not measured" in found[1]
    assert step_seconds(t, "resnet50", TrainConfig(optimizer="sam", rho=0.1)) is None  # no FLOPs: no guess


def test_run_seconds_is_epochs_of_steps_plus_evaluation_and_metrics() -> None:
    t = StepTimes("cuda: x", {"m": {"sgd": 0.128, "sam": 0.256}})
    train = TrainConfig(optimizer="sam", rho=0.1, epochs=3, batch_size=128, eval_train=True,
                        metrics=("trace_V",), metric_epochs=(0, 3), metric_samples=1000)
    found = run_seconds(t, "m", train, DataSpec("cifar10", 1280, 256))
    per_image = 0.128 / 128
    metrics = 2 * 1000 * per_image * estimate.TRACE_V_FACTOR
    expected = 3 * (10 * 0.256 + (256 + 1280) * per_image / 3) + metrics
    assert found is not None and found[0] == pytest.approx(expected)


def test_reads_the_packaged_timing_files() -> None:
    cpu = estimate.read_step_times(RESULTS / "paper-timing-cpu.json")
    raw = json.loads((RESULTS / "paper-timing-cpu.json").read_text())["models"]["resnet18"]
    steps = raw["seconds_per_step"]
    # the line through the two measured batches, read at 128
    slope = (steps["8"]["sam"] - steps["4"]["sam"]) / 4
    assert cpu.seconds["resnet18"]["sam"] == pytest.approx(steps["4"]["sam"] + slope * (128 - 4))
    assert "m-sam-m64-loop" in cpu.seconds["resnet18"]  # m-SAM with two micro-batches, as m = 64 of 128
    gpu = estimate.device_step_times(RESULTS, "cuda")
    assert gpu is not None and gpu.device_type == "cuda" and "wrn28-10" in gpu.flops
    bench = json.loads((RESULTS / "bench-cuda.json").read_text())
    assert gpu.seconds["resnet18"]["sam"] == bench["times"]["sam"]


def test_a_measured_file_wins_over_the_benchmark(tmp_path: Path) -> None:
    from sam_tutorial.engine.record import write_result_file
    from sam_tutorial.engine.result_formats import BENCH_FORMAT

    write_result_file(tmp_path / "paper-timing-cuda.json", estimate.TIMING_FORMAT,
                      {"batches": [128], "models": {"resnet18": {"flops_per_image": 2.0,
                                                                 "seconds_per_step": {"128": {"sgd": 0.5}}}}},
                      command="python tools/paper_smoke.py", device="cuda: test", wall_seconds=1.0)
    write_result_file(tmp_path / "bench-cuda.json", BENCH_FORMAT,
                      {"device": "cuda: other", "model": "resnet18", "batch": 128,
                       "times": {"sgd": 9.0, "sam": 1.5}},
                      command="sam-tutorial bench", device="cuda: other", wall_seconds=1.0)
    best = estimate.device_step_times(tmp_path)
    # the smoke's own measurement wins; the benchmark fills what the smoke lacks
    assert best is not None and best.seconds["resnet18"] == {"sgd": 0.5, "sam": 1.5}
    assert best.device == "cuda: test"
    with pytest.raises(ValueError, match="is invalid: format"):  # neither a timing nor a benchmark file
        (tmp_path / "other.json").write_text("{}")
        estimate.read_step_times(tmp_path / "other.json")
