"""Bad input and faults (the command line): a clear ``error:`` line, exit status 2 for usage
errors (1 for broken files), and nothing written: no result, checkpoint or ``.lock`` file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam_tutorial.__main__ import main
from tests.engine.helpers import mnist1d_root
from tests.engine.test_bad_input import _record_without, _smoke_path


def clean_cli_env(monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    """No device, mode or torchrun variables; the data folder ``data``."""
    for var in ("SAM_TUTORIAL_DEVICE", "SAM_TUTORIAL_MODE", "SAM_TUTORIAL_RUNS", "WORLD_SIZE", "RANK",
                "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SAM_TUTORIAL_DATA", str(data))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty output folder and a clean environment (no device, mode or torchrun variables)."""
    clean_cli_env(monkeypatch, tmp_path / "data")
    return tmp_path / "out"


def _run(out: Path, *args: str) -> list[str]:
    return ["run", "smoke", "--mode", "quick", "--no-progress", "--out", str(out), *args]


def _written(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.parent.rglob("*") if p.is_file())


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], status: int, *parts: str) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err
    assert any(line.startswith("error: ") for line in err.splitlines()) and "Traceback" not in err
    for part in parts:
        assert part in err, (part, err)
    return err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(capsys, _run(env, "--device", "cuda"), 2, "--device='cuda' but CUDA is not available",
             "accepted values look like 'cpu', 'cuda'")
    assert _written(env) == []


def test_device_meta(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(capsys, _run(env, "--device", "meta"), 2, "the meta device holds no data and cannot train")
    assert _written(env) == []


def test_device_with_an_index_beyond_the_machine(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(capsys, _run(env, "--device", f"cuda:{max(torch.cuda.device_count(), 1) + 7}"), 2, "--device=")
    assert _written(env) == []


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_env_device_mps_without_mps(env: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAM_TUTORIAL_DEVICE", "mps")
    _refused(capsys, _run(env), 2, "SAM_TUTORIAL_DEVICE='mps' but MPS is not available")
    assert _written(env) == []


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seed_out_of_range(env: Path, capsys: pytest.CaptureFixture[str], seed: str) -> None:
    _refused(capsys, _run(env, "--seed", seed), 2, f"--seed must be an integer in [0, 2**32), got {seed}")
    assert _written(env) == []  # no .lock left behind


def test_seed_out_of_range_in_show(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(capsys, ["show", "smoke", "--mode", "quick", "--seed", "-3", "--out", str(env)], 2,
             "--seed must be an integer in [0, 2**32), got -3")


def test_empty_out_is_refused(env: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(env.parent)
    _refused(capsys, ["run", "smoke", "--mode", "quick", "--out", ""], 2, "--out '' names no folder",
             "$SAM_TUTORIAL_RUNS or ./runs")
    assert _written(env) == []


def test_bad_mode_in_the_environment(env: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAM_TUTORIAL_MODE", "fast")
    _refused(capsys, ["run", "smoke", "--out", str(env)], 2, "SAM_TUTORIAL_MODE='fast' is not a valid",
             "quick, standard, paper")
    assert _written(env) == []


def test_stale_world_size_without_torchrun_does_not_wait(env: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29591")  # with these a process group would wait for rank 1
    _refused(capsys, _run(env), 2, "WORLD_SIZE=2 (RANK=0)", "not started by torchrun",
             "Unset WORLD_SIZE, RANK and LOCAL_RANK", "torchrun --nproc_per_node 2")
    assert not torch.distributed.is_initialized() and _written(env) == []


def test_show_a_result_missing_a_key(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _record_without(env, "metrics")
    _refused(capsys, ["show", "smoke", "--mode", "quick", "--seed", "0", "--out", str(env)], 1, str(path),
             "lacks ['metrics']", "Delete it and recompute it with `python -m sam_tutorial run smoke")


def test_show_a_result_that_is_not_json(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _record_without(env, "metrics")
    path.write_text('{"format": "sam_tutorial.res')
    _refused(capsys, ["show", "smoke", "--mode", "quick", "--seed", "0", "--out", str(env)], 1, str(path),
             "is not valid JSON", "delete it to recompute")
    assert path.read_text() == '{"format": "sam_tutorial.res'


def test_missing_cifar_is_an_error_line_and_leaves_no_lock(env: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "table1-resnet18-cifar10", "--mode", "quick", "--seed", "0", "--device", "cpu",
            "--no-progress", "--out", str(env)]
    err = _refused(capsys, argv, 1, "cifar10: missing data_batch_1", "cifar-10-python.tar.gz")
    assert "sam-tutorial data cifar10" in err  # the message names the command that fetches it
    assert [p for p in _written(env) if p.suffix in (".lock", ".json", ".pt")] == []


def test_a_corrupted_checkpoint_is_an_error_line(env: Path, capsys: pytest.CaptureFixture[str],
                                                 tmp_path_factory: pytest.TempPathFactory,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAM_TUTORIAL_DATA", str(mnist1d_root(tmp_path_factory)))
    ckpt = _smoke_path(env).with_suffix(".pt")
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    _refused(capsys, ["run", "smoke", "--mode", "quick", "--seed", "0", "--device", "cpu", "--no-progress",
                      "--out", str(env)], 1, f"cannot read the checkpoint {ckpt}", "Delete it")
    assert _written(env) == [ckpt] and ckpt.read_bytes() == b"PK\x03\x04 truncated"
