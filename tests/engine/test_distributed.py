"""DDP with 2 CPU ranks (gloo): perturbation scope semantics, all-reduce counts, skipping, BatchNorm.

One ``torchrun --nproc_per_node 2`` launch runs every case of tests/engine/ddp_worker.py; the tests below
read its JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from sam_tutorial.engine.distributed import DistContext, init_from_env, shard

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp") / "results.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "engine" / "ddp_worker.py"), str(out)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("case", [
    "sam_local_is_msam", "usam_local_is_musam", "sam_global_is_sam", "msam_local_is_msam",
    "rwsam_global_is_rwsam", "nsam_global_is_nsam", "sgd",
])
def test_ddp_steps_equal_the_single_process_reference(ranks: list[dict[str, Any]], case: str) -> None:
    """local = m-SAM with m = per-rank batch on the concatenated batch; global = SAM on it."""
    assert ranks[0][case]["max_diff"] < 1e-12
    assert all(r[case]["ranks_agree"] for r in ranks)


@pytest.mark.parametrize(("case", "expected"), [
    ("sgd", 1), ("sam_local_is_msam", 1), ("msam_local_is_msam", 1), ("rwsam_local", 1),
    ("sam_global_is_sam", 2), ("rwsam_global_is_rwsam", 2), ("nsam_global_is_nsam", 2),
])
def test_gradient_allreduces_per_step(ranks: list[dict[str, Any]], case: str, expected: int) -> None:
    for r in ranks:
        assert r[case]["allreduce_per_step"] == expected


def test_a_nonfinite_loss_on_one_rank_skips_the_step_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    for r in ranks:
        assert r["nonfinite_on_one_rank"] == {"skipped": True, "unchanged": True}


def test_batchnorm_statistics_come_from_each_ranks_first_pass(ranks: list[dict[str, Any]]) -> None:
    assert all(r["batchnorm"]["stats_from_first_pass"] for r in ranks)


def test_shard_concatenates_back_to_the_batch() -> None:
    x, y = torch.arange(12).reshape(6, 2), torch.arange(6)
    parts = [shard((x, y), DistContext(r, 3, r, torch.device("cpu"))) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    with pytest.raises(ValueError, match="multiple of the world size 4"):
        shard(x, DistContext(0, 4, 0, torch.device("cpu")))


def test_init_from_env_without_torchrun_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = init_from_env(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    with pytest.raises(ValueError, match="backend must be"):
        init_from_env(backend="mpi")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match=r"RANK=5 must be in \[0, WORLD_SIZE=2\)"):
        init_from_env(device="cpu")


def test_scope_is_validated_and_ignored_without_ddp() -> None:
    from sam_tutorial.optim import SAM

    model = torch.nn.Linear(3, 2)
    opt = SAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, scope="global")
    assert opt.scope is None and not opt.ddp
    with pytest.raises(ValueError, match="scope must be one of local, global"):
        SAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, scope="everywhere")


# ---------------------------------------------------------------- the CLI under torchrun
RUN = ["run", "smoke", "--mode", "quick", "--no-progress"]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``torchrun --nproc_per_node 2 -m sam_tutorial run smoke --mode quick`` twice (the second is served
    from the cache), and single-process runs of ``sgd`` and ``m-sam-m16`` into the same folder."""
    from sam_tutorial.engine.experiments import run_experiment
    from tests.engine.helpers import mnist1d_root

    data = mnist1d_root(tmp_path_factory)
    out = tmp_path_factory.mktemp("cli-ddp") / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "SAM_TUTORIAL_DATA": str(data),
           "SAM_TUTORIAL_DEVICE": "cpu"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sam_tutorial", *RUN, "--out", str(out)]
    launches = []
    for _ in range(2):
        launches.append(subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240))
        assert launches[-1].returncode == 0, launches[-1].stdout[-3000:] + launches[-1].stderr[-3000:]
        if len(launches) == 1:
            files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    single = run_experiment("smoke", mode="quick", out=out, device="cpu", data_root=data,
                            labels=["sgd", "m-sam-m16"])
    return {"out": out / "smoke" / "quick", "launches": launches, "files": files, "single": single}


def _record_and_weights(folder: Path, label: str, distributed: bool) -> tuple[dict[str, Any], dict]:
    from sam_tutorial.engine.storage import load_checkpoint

    for path in folder.glob(f"{label}-seed0-*.json"):
        record = json.loads(path.read_text())
        if ("distributed" in record["config"]) == distributed:
            return record, load_checkpoint(path.with_suffix(".pt"), record["config_hash"])["model"]
    raise AssertionError(f"no {'distributed' if distributed else 'single-process'} result for {label}")


def test_torchrun_cli_writes_one_result_per_run_from_rank_0(cli_runs: dict[str, Any]) -> None:
    first, second = cli_runs["launches"]
    labels = ["sgd", "sam", "m-sam-m16", "rw-sam"]
    assert first.stdout.count("m-sam-m16") == 1  # one table: only rank 0 prints
    assert "world_size=2" in first.stderr
    written = sorted(p for p in cli_runs["files"] if p.suffix == ".json")
    assert len(written) == len(labels)
    assert sorted(p.name.split("-seed0-")[0] for p in written) == sorted(labels)
    assert {p.suffix for p in cli_runs["files"]} == {".json", ".pt"}  # run_lock removes its .lock
    for path in written:
        record = json.loads(path.read_text())
        assert record["config"]["distributed"] == {"world_size": 2, "scope": "local"}
    # the second launch is served from the cache: same table, no file touched
    assert second.stdout == first.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in cli_runs["files"].items())


@pytest.mark.parametrize("label", ["sgd", "m-sam-m16"])
def test_torchrun_run_equals_the_single_process_run(cli_runs: dict[str, Any], label: str) -> None:
    """SGD: DDP averages the two half-batch gradients = the full-batch mean gradient. m-SAM with m = 16
    under scope local: each rank runs m-SAM on its 32 samples, which is m-SAM(m=16) on the 64."""
    ddp, w_ddp = _record_and_weights(cli_runs["out"], label, distributed=True)
    one, w_one = _record_and_weights(cli_runs["out"], label, distributed=False)
    assert ddp["config_hash"] != one["config_hash"]  # never the same cache entry
    assert one == next(r for r in cli_runs["single"].records if r["label"] == label)
    assert w_ddp.keys() == w_one.keys()
    for key in w_one:
        torch.testing.assert_close(w_ddp[key], w_one[key], rtol=1e-5, atol=1e-6)
    for key, value in one["metrics"].items():
        assert ddp["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_fit_checks_the_global_batch_against_the_world_size() -> None:
    from sam_tutorial.engine.train import fit
    from sam_tutorial.engine.train_config import TrainConfig
    from tests.engine.helpers import toy_dataset

    data = toy_dataset()
    three = DistContext(0, 3, 0, torch.device("cpu"))
    with pytest.raises(ValueError, match="batch_size=16 .* must be a multiple of the world size 3"):
        fit(torch.nn.Linear(data.input_shape[0], data.num_classes), data, TrainConfig(batch_size=16),
            ctx=three)
    two = DistContext(0, 2, 0, torch.device("cpu"))
    with pytest.raises(ValueError, match="m=16 must divide the per-rank batch"):
        fit(torch.nn.Linear(data.input_shape[0], data.num_classes), data,
            TrainConfig(optimizer="m-sam", rho=0.05, m=16, batch_size=16), ctx=two)


def test_scope_in_the_config_and_the_cache_key() -> None:
    from sam_tutorial.engine.experiments import get_experiment
    from sam_tutorial.engine.runs import run_hash
    from sam_tutorial.engine.train_config import TrainConfig

    assert "scope" not in TrainConfig().to_dict()  # the cache keys of single-process runs are unchanged
    config = TrainConfig(optimizer="sam", rho=0.05, scope="global")
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="scope must be one of local, global"):
        TrainConfig(scope="everywhere")
    with pytest.raises(ValueError, match="supports scope='local' only"):
        TrainConfig(optimizer="m-sam", rho=0.05, m=16, batch_size=64, scope="global")
    smoke = get_experiment("smoke")
    specs = {s.label: s for s in smoke.runs("quick")}
    spec = specs["sam"]
    assert "distributed" not in spec.to_dict()
    assert spec.to_dict(2)["distributed"] == {"world_size": 2, "scope": "local"}
    hashes = {run_hash(smoke, "quick", spec, 0, specs, w) for w in (1, 2, 4)}
    assert len(hashes) == 3 and run_hash(smoke, "quick", spec, 0, specs) in hashes


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SyncBatchNorm needs one CUDA device per rank")
def test_syncbatchnorm_gives_every_rank_the_global_statistics(tmp_path: Path) -> None:
    out = tmp_path / "syncbn.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "engine" / "ddp_worker.py"), str(out), "--syncbn"]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    agree = json.loads(out.read_text())[0]["buffers_agree_across_ranks"]
    assert agree == {"batchnorm": False, "syncbn": True}
