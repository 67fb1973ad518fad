"""Bad input, second round: option values, created files and paths, the engine's own inputs, the command
line's error funnel, and the assumptions of the noise and curvature tools.

Every refusal names the input (matched on the message) and leaves the model, the optimizer's state and
the disk as they were.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sam_tutorial.__main__ import main
from sam_tutorial.config import MissingExtra, UserError, check_folder
from sam_tutorial.curvature.hessian import lanczos, top_eigenvalues
from sam_tutorial.curvature.hutchinson import hessian_trace, make_probes, probe_variance
from sam_tutorial.curvature.sharpness import sam_sharpness
from sam_tutorial.engine.data import Dataset, data_root, load_dataset
from sam_tutorial.engine.distributed import DistContext, shard
from sam_tutorial.engine.experiments import load_results, run_experiment
from sam_tutorial.engine.loader import BatchLoader
from sam_tutorial.engine.measure import evaluate
from sam_tutorial.engine.storage import DataFileError, ResultFileError, atomic_write
from sam_tutorial.engine.train_config import TrainConfig
from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM
from sam_tutorial.sgn.batches import batch_distribution, batch_grad_moments
from sam_tutorial.sgn.curvature_noise import covariance_of_moments
from sam_tutorial.sgn.fast_norms import ModuleReusedError, per_sample_sq_norms, supports_fast_norms
from sam_tutorial.sgn.fisher import fisher_trace, sample_model_labels
from sam_tutorial.sgn.monte_carlo import monte_carlo_moments
from sam_tutorial.sgn.per_sample import per_sample_grads
from sam_tutorial.sgn.reweighting import maximize_unrelaxed
from sam_tutorial.sgn.variance import sgn_spectrum, sgn_trace, trace_V
from tests.engine.test_bad_input import _record_without, _smoke_path
from tests.test_bad_input_main import clean_cli_env

CPU = torch.device("cpu")


def ce(out: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content (the disk's state for "nothing changed")."""
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, before: dict[str, Tensor]) -> bool:
    after = model.state_dict()
    return all(torch.equal(before[k], after[k]) for k in before)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


# ============================================================================ 1. option values, typed
OPTIONS: list[tuple[Callable[[nn.Module, torch.optim.Optimizer], Any], str]] = [
    (lambda m, b: SAM(m, b, rho=0.1, normalize="False"),
     r"SAM: normalize must be True or False, got 'False' of type str \(a string is not read as a bool"),
    (lambda m, b: SAM(m, b, rho=0.1, adaptive="yes"), "SAM: adaptive must be True or False, got 'yes'"),
    (lambda m, b: SAM(m, b, rho=0.1, skip_nonfinite=1), "SAM: skip_nonfinite must be True or False, got 1"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, weighted_descent="False"),
     "RWSAM: weighted_descent must be True or False, got 'False'"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, normalize_probe="True"),
     "RWSAM: normalize_probe must be True or False"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, standardize=0), "RWSAM: standardize must be True or False"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, n_probes=True),
     "RWSAM: n_probes must be an integer, got True"),
    (lambda m, b: MSAM(m, b, rho=0.1, m=4.0), "MSAM: m must be an integer, got 4.0 of type float"),
    (lambda m, b: MSAM(m, b, rho=0.1, m=2, backend=3), "MSAM: backend must be a string, got 3"),
    (lambda m, b: NSAM(m, b, rho=0.1, data=(torch.zeros(4, 4), torch.zeros(4)), chunk_size=2.0),
     "NSAM: chunk_size must be an integer or None, got 2.0"),
    (lambda m, b: SAM(m, b, rho=0.1, max_grad_norm="1"),
     "SAM: max_grad_norm must be a number or None, got '1'"),
    (lambda m, b: SAM(m, b, rho=0.1, scope=1), "SAM: scope must be a string or None, got 1"),
]


@pytest.mark.parametrize(("factory", "message"), OPTIONS)
def test_option_values_are_typed(factory: Callable[..., Any], message: str) -> None:
    model = _mlp()
    before = _state(model)
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=message):
        factory(model, base)
    assert _same(model, before) and base.state_dict()["state"] == {}


def test_the_right_type_still_builds_and_numpy_bools_count_as_bools() -> None:
    model = _mlp()
    opt = RWSAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, lam=1.0,
                weighted_descent=np.bool_(True), n_probes=np.int64(2))
    assert opt.n_probes == 2 and bool(opt.weighted_descent) is True


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(optimizer="sam", rho=0.1, options={"normalize": "False"}), "SAM: normalize must be True or False"),
    (dict(optimizer="rw-sam", rho=0.1, lam=1.0, delta=0.01, options={"weighted_descent": "no"}),
     "RWSAM: weighted_descent must be True or False, got 'no'"),
    (dict(optimizer="m-sam", rho=0.1, m=2, batch_size=8, options={"backend": 1}),
     "MSAM: backend must be a string, got 1"),
    (dict(optimizer="sam", rho=0.1, options={"max_grad_norm": "inf"}), "SAM: max_grad_norm must be a number"),
])
def test_train_config_checks_option_values_before_any_run(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_train_config_from_dict_checks_option_values() -> None:
    data = TrainConfig(optimizer="sam", rho=0.1).to_dict() | {"options": {"skip_nonfinite": "true"}}
    with pytest.raises(ValueError, match="skip_nonfinite must be True or False, got 'true'"):
        TrainConfig.from_dict(data)


class _Subclass(SAM):
    """A user's subclass with an annotation that cannot be resolved at run time."""

    def __init__(self, model: nn.Module, base: torch.optim.Optimizer, *, rho: float,
                 extra: NotImportedHere | None = None, flag: bool = False) -> None:  # type: ignore[name-defined]  # noqa: F821
        super().__init__(model, base, rho=rho)
        self.flag = flag


def test_a_subclass_is_typed_too_even_with_an_unresolvable_annotation() -> None:
    model = _mlp()
    assert _Subclass(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1).flag is False
    with pytest.raises(ValueError, match="_Subclass: flag must be True or False, got 'no'"):
        _Subclass(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, flag="no")


def test_check_options_names_an_unknown_option() -> None:
    with pytest.raises(ValueError, match="SAM has no argument 'normalise'; it takes: rho, normalize"):
        SAM.check_options({"normalise": True})


@pytest.mark.parametrize(("flag", "value"), [("shuffle", "False"), ("drop_last", 0), ("augment", "no")])
def test_loader_flags_are_bools(flag: str, value: object) -> None:
    x, y = torch.zeros(8, 3, 4, 4), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match=f"{flag} must be True or False, got {value!r}"):
        BatchLoader(x, y, 4, **{flag: value})


# ============================================================================ 2. files and paths
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_created_files_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "r.json", lambda f: f.write(b"{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == mode  # what open() would have made


def test_a_rewritten_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(b"{}")
    path.chmod(0o640)
    atomic_write(path, lambda f: f.write(b"[]"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_bytes() == b"[]"


def test_atomic_write_to_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=f"cannot write {tmp_path / 'd'}: it is a folder"):
        atomic_write(tmp_path / "d", lambda f: f.write(b"x"))
    assert _files(tmp_path) == {}


def test_atomic_write_under_a_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("keep")
    with pytest.raises(UserError, match=f"{tmp_path / 'f'} is a file"):
        atomic_write(tmp_path / "f" / "r.json", lambda f: f.write(b"x"))
    assert _files(tmp_path) == {str(tmp_path / "f"): b"keep"}


@pytest.mark.parametrize("root", ["", "   "])
def test_an_empty_data_root_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=f"root={root!r} names no folder"):
        data_root(root)
    with pytest.raises(UserError, match="names no folder"):
        load_dataset("mnist1d", root=root)
    assert list(tmp_path.iterdir()) == []  # no cache in the working directory


def test_check_folder_names_a_file_where_a_parent_should_be(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match=f"--out {tmp_path / 'f' / 'a' / 'b'} cannot be created: "
                                        f"{tmp_path / 'f'} is a file"):
        check_folder("--out", tmp_path / "f" / "a" / "b", writable=True)


# ============================================================================ 3. the engine's inputs
def _dataset(**overrides: Any) -> Dataset:
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    kw: dict[str, Any] = dict(name="toy", train=(x, y), test=(x, y), num_classes=2, clean_train_targets=y)
    return Dataset(**(kw | overrides))


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(test=(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))), "the test split is empty"),
    (dict(train=(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))),
     "the train split has 4 inputs but 3 targets"),
    (dict(clean_train_targets=torch.zeros(2, dtype=torch.long)), "clean_train_targets has 2 labels"),
    (dict(test=(np.zeros((4, 2)), np.zeros(4))), "test must be a pair \\(inputs, targets\\) of tensors"),
])
def test_dataset_refuses_bad_splits(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _dataset(**overrides)


def test_evaluate_on_no_samples_is_refused_not_zero() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="evaluate: inputs hold no samples"):
        evaluate(model, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(rank=2, world_size=2, local_rank=0), r"DistContext.rank=2 is outside the world"),
    (dict(rank=-1, world_size=2, local_rank=0), r"DistContext.rank=-1 is outside the world"),
    (dict(rank=0, world_size=0, local_rank=0), "DistContext.world_size must be an integer >= 1"),
    (dict(rank=0, world_size=1, local_rank=-1), "DistContext.local_rank must be an integer >= 0"),
])
def test_dist_context_refuses_a_rank_outside_the_world(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistContext(device=CPU, **kwargs)


def test_shard_refuses_inputs_and_targets_of_different_lengths() -> None:
    ctx = DistContext(rank=1, world_size=2, local_rank=1, device=CPU)
    with pytest.raises(ValueError, match=r"disagree on the batch size \(dim 0\): \[8, 6\]"):
        shard((torch.zeros(8, 3), torch.zeros(6)), ctx)
    with pytest.raises(ValueError, match="tensors must be a tensor or a non-empty tuple"):
        shard((np.zeros(8),), ctx)  # type: ignore[arg-type]
    x, y = shard((torch.arange(8), torch.arange(8) * 10), ctx)  # the pairing is kept
    assert torch.equal(y, x * 10)


@pytest.mark.parametrize(("seeds", "message"), [([], r"seeds=\[\] names no seed"),
                                                ([1, 1], r"seeds repeats \[1\]"),
                                                ((0, 2, 0), r"seeds repeats \[0\]")])
def test_seeds_empty_or_repeated(tmp_path: Path, seeds: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        run_experiment("smoke", mode="quick", seeds=seeds, out=tmp_path, device="cpu")
    with pytest.raises(UserError, match=message):
        load_results("smoke", mode="quick", seeds=seeds, out=tmp_path)
    assert _files(tmp_path) == {}


def _edited_record(out: Path, **changes: Any) -> Path:
    path = _record_without(out, "history")
    record = json.loads(path.read_text()) | {"history": {}}
    for key, value in changes.items():
        if key.startswith("metrics."):
            record["metrics"][key.split(".", 1)[1]] = value
        else:
            record[key] = value
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize(("changes", "message"), [
    (dict(label="sam"), "says label='sam' \\(the run is 'sgd'\\)"),
    (dict(seed=3), "says seed=3 \\(the run is 0\\)"),
    (dict(seed=True), r"lacks \['seed'\]"),
    (dict(mode="paper"), "says mode='paper' \\(the run is 'quick'\\)"),
    ({"metrics.test_acc": "0.93"}, r"lacks \['metrics.test_acc'\]"),
    ({"metrics.test_loss": [1.0]}, r"lacks \['metrics.test_loss'\]"),
])
def test_an_edited_cached_result_is_named_not_averaged(tmp_path: Path, changes: dict[str, Any],
                                                       message: str) -> None:
    path = _edited_record(tmp_path, **changes)
    before = _files(tmp_path)
    with pytest.raises(ResultFileError, match=message) as info:
        load_results("smoke", mode="quick", seeds=[0], out=tmp_path)
    assert str(path) in str(info.value) and "Delete it" in str(info.value)
    assert _files(tmp_path) == before


def test_a_cached_result_with_its_own_label_still_loads(tmp_path: Path) -> None:
    _edited_record(tmp_path)
    result = load_results("smoke", mode="quick", seeds=[0], out=tmp_path)
    assert [r["label"] for r in result.records] == ["sgd"]


def _mnist1d_copy(tmp_path: Path, mnist1d: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> Path:
    src = mnist1d / "mnist1d" / "mnist1d-seed42-5000.npz"
    with np.load(src) as z:
        arrays = {k: z[k].copy() for k in z.files}
    edit(arrays)
    path = tmp_path / "mnist1d" / src.name
    path.parent.mkdir(parents=True)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def mnist1d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.engine.helpers import mnist1d_root

    return mnist1d_root(tmp_path_factory)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda a: a["x"].__setitem__((3, 5), np.nan), "non-finite or non-float inputs \\(x: 1 non-finite\\)"),
    (lambda a: a["x_test"].__setitem__((0, 0), np.inf), "x_test: 1 non-finite"),
    (lambda a: a["y"].__setitem__(0, 10), "labels y that are not integers in 0..9"),
    (lambda a: a.__setitem__("y_test", a["y_test"].astype(np.float64)),
     "labels y_test that are not integers"),
])
def test_a_broken_mnist1d_cache_is_named(tmp_path: Path, mnist1d: Path, edit: Callable[..., None],
                                         message: str) -> None:
    path = _mnist1d_copy(tmp_path, mnist1d, edit)
    before = _files(tmp_path)
    with pytest.raises(DataFileError, match=message) as info:
        load_dataset("mnist1d", root=tmp_path)
    assert str(path) in str(info.value) and "delete it" in str(info.value)
    assert _files(tmp_path) == before


# ============================================================================ 4. the command line's funnel
@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clean_cli_env(monkeypatch, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep")
    return tmp_path


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str], status: int, *parts: str) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("# ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


RUN = ["run", "smoke", "--mode", "quick", "--no-progress", "--out", "out"]


@pytest.mark.parametrize(("argv", "parts"), [
    ([*RUN, "--seed", "0", "--seed", "0"], ["--seed 0 given more than once"]),
    ([*RUN, "--seed", "1", "--seed", "2", "--seed", "1"], ["--seed 1 given more than once"]),
    ([*RUN, "--data-root", ""], ["--data-root '' names no folder"]),
    ([*RUN, "--data-root", "afile"], ["--data-root afile is a file"]),
    (["run", "smoke", "--mode", "quick", "--out", "afile/sub"], ["cannot be created", "afile is a file"]),
    ([*RUN, "--seed", "x"], ["argument --seed: invalid int value: 'x'", "run --help"]),
    (["run", "smok"], ["unknown experiment 'smok'; valid names: smoke"]),
    (["bench", "--device", "cpu", "--json", "."], ["--json '.' is a folder"]),
    (["bench", "--device", "cpu", "--json", "afile/b.json"], ["--json's folder afile is a file"]),
    (["bench", "--batch", "x"], ["argument --batch: invalid int value: 'x'"]),
    (["bench", "--device", "tpu"], ["argument --device: invalid choice: 'tpu'"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ([], ["the following arguments are required: command"]),
    (["show", "smoke", "--mode", "quick", "--out", "afile"], ["afile is a file"]),
])
def test_usage_errors_are_one_line_and_status_2(cli_env: Path, capsys: pytest.CaptureFixture[str],
                                                argv: list[str], parts: list[str]) -> None:
    before = _files(cli_env)
    _one_line(capsys, argv, 2, *parts)
    assert _files(cli_env) == before


def test_runs_env_pointing_at_a_file(cli_env: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAM_TUTORIAL_RUNS", str(cli_env / "afile"))
    _one_line(capsys, ["run", "smoke", "--mode", "quick"], 2, "afile is a file")
    assert _files(cli_env) == {str(cli_env / "afile"): b"keep"}


def test_a_missing_extra_is_one_line(cli_env: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import sam_tutorial.engine.data as data

    def missing(module: str, extra: str) -> Any:
        raise MissingExtra(f"{module.split('.')[0]} is not installed; it comes with the {extra!r} extra")

    monkeypatch.setattr(data, "require", missing)  # as if mnist1d were not installed
    _one_line(capsys, [*RUN, "--seed", "0"], 2, "mnist1d is not installed", "'data' extra")
    assert not list((cli_env / "out").rglob("*.json"))


def test_an_edited_result_in_show_is_one_line_status_1(cli_env: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = _edited_record(cli_env / "out", label="sam")
    _one_line(capsys, ["show", "smoke", "--mode", "quick", "--seed", "0", "--out", "out"], 1,
              str(_smoke_path(Path("out"))), "says label='sam'")
    assert path.exists()


# ============================================================================ 5. noise and curvature tools
class FunctionalReuse(nn.Module):
    """The first layer's weight is used again by a functional call: tied weights the hooks cannot see."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.a(x))
        return self.b(torch.tanh(nn.functional.linear(h, self.a.weight)))


class BatchCentred(nn.Module):
    """Subtracts the batch mean: each sample's output depends on the others."""

    def forward(self, x: Tensor) -> Tensor:
        return x - x.mean(0, keepdim=True)


def _batch(n: int = 12) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def test_reused_weights_take_the_exact_route() -> None:
    torch.manual_seed(0)
    model = FunctionalReuse().double()
    x, y = _batch()
    assert supports_fast_norms(model)  # module by module it looks supported ...
    exact = trace_V(model, ce, x, y, method="vmap")
    assert torch.allclose(trace_V(model, ce, x, y), exact, rtol=1e-10)  # ... but auto is not fooled
    reused = r"parameter\(s\) a.weight \(2 uses\) are read more than once"
    with pytest.raises(ModuleReusedError, match=reused):
        trace_V(model, ce, x, y, method="hooks")
    # the per-sample norms themselves, two routes
    with pytest.raises(ModuleReusedError, match="a.weight"):
        per_sample_sq_norms(model, ce, x, y)
    grads = per_sample_grads(model, ce, x, y)
    assert torch.allclose(grads.square().sum(1).mean() - grads.mean(0).square().sum(), exact)


def test_a_model_that_mixes_samples_is_refused_by_both_routes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), BatchCentred(), nn.Linear(4, 3)).double()
    before = _state(model)
    x, y = _batch()
    for method in ("auto", "hooks", "vmap"):
        with pytest.raises(ValueError, match="the model mixes samples across the batch"):
            trace_V(model, ce, x, y, method=method)
    with pytest.raises(ValueError, match="per-sample gradients: the model mixes samples"):
        per_sample_grads(model, ce, x, y)
    assert _same(model, before)


def test_train_mode_batchnorm_is_refused_and_its_statistics_kept() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double().train()
    before = _state(model)
    x, y = _batch()
    with pytest.raises(ValueError, match="BatchNorm layer '1' is in training mode"):
        trace_V(model, ce, x, y, eval_mode=False)
    assert _same(model, before) and model.training
    assert torch.isfinite(trace_V(model, ce, x, y))  # eval_mode=True (default) is per-sample


def test_dropout_in_train_mode_is_not_taken_for_mixing() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    x, y = _batch()
    value = trace_V(model, ce, x, y, eval_mode=False, method="vmap")
    assert torch.isfinite(value) and value > 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda: batch_distribution(4, 2, dtype=torch.int64), "dtype must be a floating torch dtype"),
    (lambda: batch_grad_moments(torch.ones(4, 3, dtype=torch.int64), 2),
     "grads must have a floating dtype .* got torch.int64"),
    (lambda: lanczos(lambda v: v, 4, 2, dtype=torch.int32), "dtype must be a floating torch dtype"),
    (lambda: make_probes(2, 3, dtype=torch.int64), "dtype must be a floating torch dtype"),
    (lambda: probe_variance(torch.eye(3, dtype=torch.int64)), "matrix must have a floating dtype"),
    (lambda: sgn_trace(np.ones((3, 2))), "grads must be a torch.Tensor, got ndarray; .*torch.from_numpy"),
    (lambda: covariance_of_moments(np.ones((2, 1)), torch.ones(2, 1, 1)), "grads must be a torch.Tensor"),
    (lambda: sgn_spectrum(torch.tensor([[1.0, math.nan], [0.0, 1.0]])),
     r"grads holds 1 non-finite value\(s\)"),
    (lambda: monte_carlo_moments(torch.tensor([[1.0], [math.inf]]), torch.zeros(1)),
     "batch_grads holds 1 non-finite"),
    (lambda: maximize_unrelaxed(torch.tensor([[math.nan, 1.0]]), 1.0), "grads holds 1 non-finite"),
    (lambda: lanczos(lambda v: v * math.nan, 4, 3), "lanczos: the operator returned non-finite values"),
])
def test_noise_tool_inputs(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(("which", "message"), [
    ("inputs", "inputs must be a torch.Tensor, got ndarray; it is a NumPy array"),
    ("targets", "targets must be a torch.Tensor, got ndarray"),
])
def test_numpy_batches_are_refused_with_the_conversion(which: str, message: str) -> None:
    model = _mlp()
    before = _state(model)
    x, y = _batch()
    args = {"inputs": x, "targets": y} | {which: {"inputs": x, "targets": y}[which].numpy()}
    for fn in (trace_V, per_sample_grads):
        with pytest.raises(ValueError, match=message):
            fn(model, ce, args["inputs"], args["targets"])
    with pytest.raises(ValueError, match=message):
        top_eigenvalues(model, ce, args["inputs"], args["targets"])
    assert _same(model, before)


def test_a_nan_parameter_into_the_eigensolver_is_named() -> None:
    model = _mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan
    before = _state(model)
    x, y = _batch()
    with pytest.raises(ValueError, match="lanczos: the operator returned non-finite values"):
        top_eigenvalues(model, ce, x, y, k=1, n_iter=4)
    assert all(torch.equal(a, b) or (a.isnan() == b.isnan()).all()
               for a, b in zip(before.values(), model.state_dict().values(), strict=True))


@pytest.mark.parametrize("call", [
    lambda m, x, y: fisher_trace(m, x.numpy()),
    lambda m, x, y: sample_model_labels(m, x.numpy()),
    lambda m, x, y: hessian_trace(m, ce, x.numpy(), y, n_probes=2),
    lambda m, x, y: sam_sharpness(m, ce, x.numpy(), y, rho=0.05),
])
def test_numpy_inputs_everywhere_in_the_tools(call: Callable[..., Any]) -> None:
    model = _mlp()
    before = _state(model)
    x, y = _batch()
    with pytest.raises(ValueError, match="inputs must be a torch.Tensor, got ndarray; it is a NumPy array"):
        call(model, x, y)
    assert _same(model, before)
