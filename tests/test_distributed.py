"""DDP with 2 CPU ranks (gloo): perturbation scope semantics, all-reduce counts, skipping, BatchNorm.

One ``torchrun --nproc_per_node 2`` launch runs every case of tests/ddp_worker.py; the tests below
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

from sam_tutorial.distributed import DistContext, init_from_env, shard

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp") / "results.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(out)]
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
