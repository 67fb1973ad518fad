"""Tests for ``python -m sam_tutorial``: list, run, show, unknown names, SIGKILL + resume, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sam_tutorial.__main__ import SUBCOMMANDS, main
from sam_tutorial.engine.experiments import EXPERIMENTS
from tests.engine.helpers import mnist1d_root

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mnist1d_root(tmp_path_factory)


@pytest.fixture
def env(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("SAM_TUTORIAL_DATA", str(data_root))
    monkeypatch.setenv("SAM_TUTORIAL_DEVICE", "cpu")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sam_tutorial", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_list_prints_one_name_per_line_first(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(EXPERIMENTS)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # every name has a description


@pytest.mark.parametrize("command", ["run", "show"])
def test_unknown_names_exit_2_and_list_the_valid_ones(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "no-such-experiment"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'no-such-experiment'" in err
    assert all(name in err for name in EXPERIMENTS)


def test_the_module_exits_with_status_2(env: dict[str, str]) -> None:
    proc = cli("run", "nope", env=env)
    assert proc.returncode == 2 and "smoke" in proc.stderr


def test_bad_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "smoke", "--mode", "fast"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "invalid choice: 'fast'" in err


def test_every_subcommand_has_help_and_a_handler(capsys: pytest.CaptureFixture[str]) -> None:
    assert [name for name, *_ in SUBCOMMANDS] == ["list", "run", "show", "plan", "bench", "data"]
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and all(name in out for name, *_ in SUBCOMMANDS)


def test_run_then_show(tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "runs")
    assert main(["show", "smoke", "--mode", "quick", "--out", out]) == 1
    assert "no cached results" in capsys.readouterr().err
    assert main(["run", "smoke", "--mode", "quick", "--out", out, "--no-progress", "--seed", "3"]) == 0
    table = capsys.readouterr().out
    assert main(["show", "smoke", "--mode", "quick", "--out", out, "--seed", "3"]) == 0
    shown = capsys.readouterr().out
    assert table in shown and "smoke (quick mode)" in shown
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["sgd", "sam", "m-sam-m16", "rw-sam"]
    files = (tmp_path / "runs" / "smoke" / "quick").glob("*.json")
    assert sorted(p.name.split("-seed")[0] for p in files) == ["m-sam-m16", "rw-sam", "sam", "sgd"]


# ----------------------------------------------------------------------------- crash safety
def results(folder: Path) -> dict[str, dict]:
    """Result files by name, without what legitimately differs between runs (timings, provenance)."""
    out = {}
    for p in sorted(folder.rglob("*.json")):
        r = json.loads(p.read_text())
        r["history"].pop("seconds")
        for key in ("timing", "provenance", "versions"):
            r.pop(key)
        out[p.name] = r
    return out


SLOW_CHECKPOINTS = (
    "import sys, time\n"
    "import sam_tutorial.engine.train as t\n"
    "save = t.save_checkpoint\n"
    "def slow(*a, **k):\n"
    "    save(*a, **k)\n"
    "    time.sleep(1.0)  # widens the window between checkpoints; results are unaffected\n"
    "t.save_checkpoint = slow\n"
    "from sam_tutorial.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path: Path, env: dict[str, str]) -> None:
    args = ["run", "smoke", "--mode", "quick", "--no-progress"]
    ref = cli(*args, "--out", str(tmp_path / "ref"), env=env)
    assert ref.returncode == 0, ref.stderr
    reference = results(tmp_path / "ref")
    assert len(reference) == 4

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CHECKPOINTS, *args, "--out", str(out)], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.rglob("*.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(list(out.rglob("*.pt"))) == 1 and not list(out.rglob("*.json"))  # killed after epoch 1

    again = cli(*args, "--out", str(out), env=env)
    assert again.returncode == 0, again.stderr
    assert results(out) == reference
    resumed = [json.loads(p.read_text())["provenance"]["resumed_from_epoch"] for p in out.rglob("*.json")]
    assert sorted(resumed) == [0, 0, 0, 1]  # the killed run continued from its checkpoint

    # two processes on the same configuration: one trains, the other waits and reads its result
    shared = tmp_path / "shared"
    command = [sys.executable, "-m", "sam_tutorial", *args, "--out", str(shared)]
    procs = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]  # the same table
    assert results(shared) == reference
    assert not [p for p in shared.rglob(".*") if ".tmp-" in p.name]  # no half-written file left
