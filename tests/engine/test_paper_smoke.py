"""tools/paper_smoke.py on the CPU with tiny settings (the quick-mode stand-ins, a batch of 16): the file it
writes is read by the device-hour estimates as measured step times, with its provenance. (Its purpose, the
CUDA measurement of the paper models, needs a GPU.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sam_tutorial.engine import estimate
from sam_tutorial.engine.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def _tool() -> object:
    spec = importlib.util.spec_from_file_location("paper_smoke", ROOT / "tools" / "paper_smoke.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_configs_cover_every_step_cost_of_the_catalogue() -> None:
    tool = _tool()
    keys = tool.paper_configs("resnet18")  # type: ignore[attr-defined]
    assert {"sgd", "sam", "rw-sam", "n-sam-n1024"} <= set(keys)
    assert {f"m-sam-m{m}-{'loop' if m == 64 else 'vmap'}" for m in (64, 32, 16, 8)} <= set(keys)
    assert all(estimate.timing_key(c) == k for k, c in keys.items())
    scaled = tool.at_batch(keys["m-sam-m32-vmap"], 16)  # type: ignore[attr-defined]
    assert (scaled.batch_size, scaled.m) == (16, 4)  # the same four micro-batches


def test_the_smoke_writes_measured_step_times_with_provenance(tmp_path: Path) -> None:
    out = tmp_path / "paper-timing-cpu.json"
    argv = ["--device", "cpu", "--quick-models", "--models", "resnet18", "--batch", "16", "--steps", "1",
            "--warmup", "0", "--keys", "sgd,sam,m-sam-m64-loop", "--out", str(out)]
    assert _tool().main(argv) == 0  # type: ignore[attr-defined]
    data = json.loads(out.read_text())
    assert data["provenance"]["command"].endswith(" ".join(argv))
    assert "quick-mode" in data["provenance"]["notes"]
    measured = data["models"]["resnet18"]["seconds_per_step"]["16"]
    assert set(measured) == {"sgd", "sam", "m-sam-m64-loop", "m-sam-half-loop"}
    times = estimate.read_step_times(out)
    # one batch measured: the time per image carried to the batch of 128
    assert times.seconds["resnet18"]["sam"] == measured["sam"] * 128 / 16
    found = estimate.step_seconds(times, "resnet18", TrainConfig(optimizer="sam", rho=0.05))
    assert found is not None and found[1] == "measured"
    assert times.flops["resnet18"] > 0
