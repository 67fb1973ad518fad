"""The launcher (engine/launch.py) end to end through submitit's local executor: submission, a pre-emption
and requeue that resumes from the run's own checkpoint, and gathering from the runs folder; the plan of
a partly done experiment (engine/plan.py); the command line of both."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
import torch

from sam_tutorial.__main__ import main
from sam_tutorial.engine import experiments, launch
from sam_tutorial.engine.estimate import StepTimes, run_seconds
from sam_tutorial.engine.plan import plan_experiment
from sam_tutorial.engine.record import records_from_results, write_recorded
from sam_tutorial.engine.runs import DataSpec, Experiment, RunSpec, run_hash, run_one, run_path
from sam_tutorial.engine.train_config import TrainConfig
from tests.engine.helpers import write_fake_cifar

pytest.importorskip("submitit")

EPOCHS = 4


def _build(mode: str) -> list[RunSpec]:
    data = DataSpec("cifar10", 160, 32)
    base = dict(epochs=EPOCHS, batch_size=32, lr=0.05, eval_train=False)
    return [
        RunSpec("sgd", data, "mlp", TrainConfig(optimizer="sgd", **base), {"hidden": (16,)}),
        RunSpec("sam", data, "mlp", TrainConfig(optimizer="sam", rho=0.05, **base), {"hidden": (16,)}),
        RunSpec("sam-next", data, "mlp", TrainConfig(optimizer="sam", rho=0.05, **base), {"hidden": (16,)},
                init_from="sgd"),
    ]


EXP = Experiment("launch-test", "tiny MLP on fake CIFAR for the launcher tests", _build,
                 {"quick": (0,), "standard": (0,), "paper": (0,)})


class PreemptedOnce(launch.RunJob):
    """On its first attempt, the job sends itself submitit's pre-emption signal right after the run's
    first epoch checkpoint is written; the requeued attempt runs undisturbed."""

    def __call__(self) -> dict:
        if self.label == "sam" and self.attempt == 0:
            from sam_tutorial.engine import train

            save = train.save_checkpoint

            def save_then_preempt(*args: object, **kwargs: object) -> None:
                save(*args, **kwargs)  # type: ignore[arg-type]
                os.kill(os.getpid(), signal.SIGUSR2)  # as Slurm does before pre-emption

            train.save_checkpoint = save_then_preempt  # type: ignore[assignment]
        return super().__call__()


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    write_fake_cifar(tmp_path / "data", per_file=40)
    return tmp_path / "data"


@pytest.fixture
def registered() -> object:
    experiments.register(EXP)
    yield EXP
    experiments.EXPERIMENTS.pop(EXP.name)


def test_local_executor_preemption_requeue_and_gather(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "runs"
    lines: list[str] = []
    done = launch.launch(EXP.name, launcher="submitit-local", mode="quick", out=out, device="cpu",
                         data_root=data_root, experiment=EXP, job=PreemptedOnce, report=lines.append,
                         options={"timeout_min": 10})
    assert not done.failed, done.failed
    assert set(done.jobs) == {("sgd", 0), ("sam", 0), ("sam-next", 0)}
    # the pre-empted job was requeued once and resumed from its checkpoint after epoch 1
    assert done.outputs["sam", 0]["attempt"] == 1
    assert done.outputs["sam", 0]["resumed_from_epoch"] == 1
    assert done.outputs["sgd", 0]["resumed_from_epoch"] == 0
    assert any("resumed from epoch 1" in line for line in lines)
    # the child ran after its parent, in a second wave
    assert lines.index(next(x for x in lines if x.startswith("submitted sam-next"))) > lines.index(
        next(x for x in lines if x.startswith("done sgd")))
    # gathered from the folder: equal to what an uninterrupted run in this process computes
    assert done.result is not None and sorted(done.result.labels()) == ["sam", "sam-next", "sgd"]
    specs = {s.label: s for s in EXP.runs("quick")}
    fresh = run_one(EXP, "quick", specs["sam"], 0, out=tmp_path / "fresh", device=torch.device("cpu"),
                    data_root=data_root, specs=specs)
    gathered = done.result.select("sam")[0]
    assert gathered["history"]["train_loss"] == fresh["history"]["train_loss"]
    assert gathered["history"]["test_acc"] == fresh["history"]["test_acc"]
    assert gathered["config_hash"] == fresh["config_hash"]
    # a second launch finds everything cached and submits nothing
    again = launch.launch(EXP.name, launcher="submitit-local", mode="quick", out=out, device="cpu",
                          data_root=data_root, experiment=EXP, report=lines.append)
    assert again.jobs == {} and sorted(again.cached) == [("sam", 0), ("sam-next", 0), ("sgd", 0)]


def _interrupted(out: Path, data_root: Path, label: str) -> None:
    """Train ``label`` until its first checkpoint, then stop as a pre-empted job would."""
    from sam_tutorial.engine import train

    specs = {s.label: s for s in EXP.runs("quick")}
    save = train.save_checkpoint

    def save_then_stop(*args: object, **kwargs: object) -> None:
        save(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    train.save_checkpoint = save_then_stop  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            run_one(EXP, "quick", specs[label], 0, out=out, device=torch.device("cpu"), data_root=data_root,
                    specs=specs)
    finally:
        train.save_checkpoint = save


def test_plan_of_a_partly_done_experiment(tmp_path: Path, data_root: Path, registered: object,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out, results = tmp_path / "runs", tmp_path / "results"
    specs = {s.label: s for s in EXP.runs("quick")}
    cpu = torch.device("cpu")
    # seed 0 of sgd cached; seed 1 of sgd recorded in results/ only; sam seed 0 stopped after epoch 1
    run_one(EXP, "quick", specs["sgd"], 0, out=out, device=cpu, data_root=data_root, specs=specs)
    other = run_one(EXP, "quick", specs["sgd"], 1, out=tmp_path / "elsewhere", device=cpu,
                    data_root=data_root, specs=specs)
    results.mkdir()
    write_recorded(results / "launch-test-quick.json", EXP.name, "quick", records_from_results([other]),
                   command="test", device="cpu", wall_seconds=0.0)
    _interrupted(out, data_root, "sam")
    times = StepTimes("cuda: test", {"mlp": {"sgd": 0.01, "sam": 0.02}})
    plan = plan_experiment(EXP.name, mode="quick", seeds=[0, 1], out=out, results=results, times=times)
    status = {(r.label, r.seed): (r.status, r.done_epochs) for r in plan.runs}
    assert status == {("sgd", 0): ("cached", EPOCHS), ("sgd", 1): ("recorded", 0),
                      ("sam", 0): ("resumes", 1), ("sam", 1): ("to run", 0),
                      ("sam-next", 0): ("to run", 0), ("sam-next", 1): ("to run", 0)}
    # hours: a run's whole cost from the step times; the resumable one is charged its epochs left
    whole = {}
    for lab, spec in specs.items():
        found = run_seconds(times, "mlp", spec.train, spec.data)
        assert found is not None
        whole[lab] = found[0] / 3600
    left = {(r.label, r.seed): r.hours_left for r in plan.runs}
    assert left["sgd", 0] == 0 and left["sgd", 1] == 0
    assert left["sam", 0] == pytest.approx(whole["sam"] * (EPOCHS - 1) / EPOCHS)
    assert left["sam", 1] == pytest.approx(whole["sam"])
    assert plan.hours() == pytest.approx(whole["sam"] * (2 - 1 / EPOCHS) + 2 * whole["sam-next"])
    # the command line prints the same plan
    assert main(["plan", EXP.name, "--mode", "quick", "--seed", "0", "--seed", "1", "--out", str(out),
                 "--results", str(results)]) == 0
    text = capsys.readouterr().out
    assert "2 to run" not in text and "3 to run" in text and "resumes at 1/4" in text and "recorded" in text
    # the resumable run's path is the one run_one would write
    digest = run_hash(EXP, "quick", specs["sam"], 0, specs)
    assert next(r for r in plan.runs if r.label == "sam" and r.seed == 0).path == run_path(
        out, EXP, "quick", specs["sam"], 0, digest)


def test_run_with_the_debug_launcher_from_the_command_line(
    tmp_path: Path, data_root: Path, registered: object, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    assert main(["run", EXP.name, "--mode", "quick", "--launcher", "submitit-debug", "--out", str(out),
                 "--data-root", str(data_root), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "sam-next" in captured.out and "3 jobs submitted, 0 runs cached" in captured.err
    assert main(["show", EXP.name, "--mode", "quick", "--out", str(out)]) == 0
    assert "sam-next" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--launcher", "submitit-local", "--detach"], "needs submitit-slurm"),
    (["--launcher", "submitit-local", "--launcher-option", "timeout_min"], "must be KEY=VALUE"),
    (["--launcher-option", "timeout_min=5"], "need --launcher"),
    (["--launcher", "submitit-local", "--gpus-per-run", "0"], "--gpus-per-run"),
    (["--launcher", "submitit-local", "--device", "gpu0"], "names no torch device"),
])
def test_launcher_usage_errors_are_one_line(tmp_path: Path, registered: object, argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    assert main(["run", EXP.name, "--mode", "quick", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and message in err
    assert not out.exists()  # nothing submitted, nothing written


def test_parse_options_types_values() -> None:
    assert launch.parse_options(["timeout_min=720", "slurm_partition=gpu", "mem_gb=7.5", "x=true"]) == {
        "timeout_min": 720, "slurm_partition": "gpu", "mem_gb": 7.5, "x": True}


def test_one_run_on_two_processes_through_the_local_executor(tmp_path: Path, data_root: Path) -> None:
    """gpus_per_run = 2: submitit starts two tasks, the job exports torchrun's variables and the run trains
    under DDP (gloo on the CPU); its record says so, and it is gathered with its world size."""
    out = tmp_path / "runs"
    exp = Experiment("launch-ddp-test", "two-process run", lambda mode: _build(mode)[:1], {"quick": (0,)})
    done = launch.launch(exp.name, launcher="submitit-local", mode="quick", out=out, device="cpu",
                         data_root=data_root, experiment=exp, gpus_per_run=2, report=lambda line: None,
                         options={"timeout_min": 10})
    assert not done.failed, done.failed
    assert done.result is not None
    (record,) = done.result.records
    assert record["config"]["distributed"]["world_size"] == 2
    assert len(record["history"]["test_acc"]) == EPOCHS


@pytest.mark.parametrize("argv, message", [
    (["--timing", "missing.json"], "is not a file"),
    (["--timing", "{bad}"], "holds no step times"),
    (["--results", "{file}"], "is not a folder"),
    (["--gpus-per-run", "0"], "--gpus-per-run"),
])
def test_plan_usage_errors_are_one_line(tmp_path: Path, argv: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    (tmp_path / "file.txt").write_text("not a folder")
    argv = [a.replace("{bad}", str(tmp_path / "bad.json")).replace("{file}", str(tmp_path / "file.txt"))
            for a in argv]
    assert main(["plan", "smoke", "--mode", "quick", "--out", str(tmp_path / "runs"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and message in err


class _FakeExecutor:
    """Records what the detached Slurm path asks of an executor (no Slurm on the test machine)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.params: dict[str, object] = {}

    def update_parameters(self, **params: object) -> None:
        self.params |= params

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def submit(self, job: launch.RunJob) -> object:
        handle = type("Job", (), {"job_id": f"{job.label}-{job.seed}"})()
        self.calls.append((job.label, dict(self.params)))
        return handle


def test_detached_children_depend_on_their_parents_job() -> None:
    executor = _FakeExecutor()
    specs = {s.label: s for s in EXP.runs("quick")}
    make = launch._maker(launch.RunJob, EXP, "quick", Path("runs"), "cpu", None)
    waves = launch._waves(EXP.runs("quick"))
    assert [[s.label for s in w] for w in waves] == [["sgd", "sam"], ["sam-next"]]
    first = launch._submit(executor, make, [("sgd", 0), ("sam", 0)], False, {}, specs, {"account": "x"})
    launch._submit(executor, make, [("sam-next", 0)], False, first, specs, {"account": "x"})
    extra = {label: params.get("slurm_additional_parameters", {}) for label, params in executor.calls}
    assert "dependency" not in extra["sgd"]  # a wave without parents goes as one job array
    assert extra["sam-next"] == {"account": "x", "dependency": "afterok:sgd-0"}  # the user's kept
