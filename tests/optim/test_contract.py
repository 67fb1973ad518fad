"""The optimizer contract, swept over the variant registry (as torch's own optimizer tests sweep their
``optim_db``): every example configuration of every registered variant is built here, and the tables of
``test_base`` (skipping non-finite steps bit-exactly, state_dict resume, GradScaler), ``test_loops``
(exception safety, hand-written loops) and ``test_gpu`` (no host synchronisation) are this one, so a
newly registered variant is swept by all of them without editing a test. This module adds the
properties no other file states: rho = 0 is exactly the base optimizer, and everything that names the
variants (TrainConfig, the benchmark, the figure colours) reads the registry."""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from sam_tutorial.optim import MSAM
from sam_tutorial.optim.base import PerturbedOptimizer
from sam_tutorial.optim.variants import REGISTRY, Variant, make, variant_of
from tests.optim.helpers import CE, assert_params_equal, batch, mlp, sgd

Factory = Callable[[nn.Module, torch.optim.Optimizer], PerturbedOptimizer]
Data = tuple[Tensor, Tensor]

X_ALL, Y_ALL = batch(seed=7, n=32)
"""The data set of the variants that take ``data`` (n-SAM): 32 samples, 4 chunks of 8."""


def cases() -> dict[str, tuple[Variant, dict[str, Any]]]:
    """Every example configuration of every registered variant, by label (``m-sam-m4-vmap``)."""
    return {v.label(suffix): (v, dict(settings)) for v in REGISTRY.values()
            for suffix, settings in v.examples.items()}


def factories(*, rho: float = 0.1, data: Data | Callable[[], Data] | None = None,
              chunk_size: int = 8) -> dict[str, Factory]:
    """``label -> factory(model, base)`` for every case; ``data`` (default ``(X_ALL, Y_ALL)``, or a
    function returning it, evaluated when the optimizer is built) goes to the variants that take it."""

    def factory(v: Variant, settings: dict[str, Any]) -> Factory:
        def build(model: nn.Module, base: torch.optim.Optimizer) -> PerturbedOptimizer:
            kw = dict(settings)
            if "data" in v.settings:
                kw["data"] = (data() if callable(data) else data) if data is not None else (X_ALL, Y_ALL)
                if "chunk_size" in inspect.signature(v.cls.__init__).parameters:
                    kw["chunk_size"] = chunk_size
            return v.make(model, base, rho=rho, **kw)
        return build

    return {name: factory(v, settings) for name, (v, settings) in cases().items()}


FACTORIES = factories()
NAMES = list(FACTORIES)


def test_every_variant_has_an_example_and_every_example_builds_its_class() -> None:
    assert NAMES and all(v.examples for v in REGISTRY.values())
    for name, (v, _) in cases().items():
        model = mlp()
        opt = FACTORIES[name](model, sgd(model))
        assert type(opt) is v.cls and variant_of(name) == v.name
        for key, value in v.fixed.items():  # the variant's defining arguments reached the object
            assert getattr(opt, key) == value, (name, key)


@pytest.mark.parametrize("name", NAMES)
def test_rho_zero_is_exactly_the_base_optimizer(name: str) -> None:
    """With rho = 0 every variant takes one plain step of its base optimizer on the batch mean loss."""
    a, b = mlp(bn=True), mlp(bn=True)
    opt = factories(rho=0.0)[name](a, torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9))
    base = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    for seed in range(2):
        x, y = batch(seed=seed)
        stats = opt.step(x, y, CE)
        base.zero_grad()
        loss = CE(b(x), y).mean()
        loss.backward()
        base.step()
        assert float(stats.perturbation_norm) == 0.0 and torch.equal(stats.loss, loss.detach())
    assert_params_equal(a, b)
    for u, v in zip(a.buffers(), b.buffers()):
        assert torch.equal(u, v)


@pytest.mark.parametrize("name", [n for n in NAMES if cases()[n][0].fixed.get("rho", 1) != 0])
def test_rho_moves_the_step_away_from_the_base_optimizer(name: str) -> None:
    """The converse: with rho > 0 the step differs from the plain step (the perturbation is used)."""
    a, b = mlp(), mlp()
    FACTORIES[name](a, sgd(a)).step(*batch(), CE)
    factories(rho=0.0)[name](b, sgd(b)).step(*batch(), CE)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_restores_the_variant_state_exactly(name: str) -> None:
    """A checkpoint taken mid-run and loaded into a fresh optimizer continues bit-exactly; its
    ``sam`` entry (the variant's own state, e.g. RW-SAM's probe generator) survives a deepcopy."""
    model = mlp()
    opt = FACTORIES[name](model, sgd(model))
    opt.step(*batch(seed=0), CE)
    saved, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    opt.step(*batch(seed=1), CE)
    again = mlp()
    again.load_state_dict(weights)
    fresh = FACTORIES[name](again, sgd(again))
    fresh.load_state_dict(saved)
    fresh.step(*batch(seed=1), CE)
    assert_params_equal(model, again)


def test_train_config_builds_every_registered_variant() -> None:
    from sam_tutorial.engine.data import Dataset
    from sam_tutorial.engine.train_config import OPTIMIZERS, TrainConfig, make_optimizer

    assert OPTIMIZERS == tuple(REGISTRY)
    data = Dataset("toy", (X_ALL.float(), Y_ALL), (X_ALL.float(), Y_ALL), 3, Y_ALL)
    given = {"m": 4, "lam": 1.0, "delta": 0.01}
    for name, v in REGISTRY.items():
        kw = {k: given[k] for k in v.settings if k in given}
        cfg = TrainConfig(optimizer=name, rho=v.fixed.get("rho", 0.05), batch_size=16, **kw)
        model = mlp(dtype=torch.float32)
        opt = make_optimizer(model, cfg, data)
        assert type(opt) is v.cls
        assert all(getattr(opt, k) == value for k, value in {**kw, **v.fixed}.items()), name


def test_benchmark_and_colours_read_the_registry() -> None:
    from sam_tutorial.chapters import plotting
    from sam_tutorial.engine import bench

    timed = bench.variants(16, (4,), ("loop",), (X_ALL, Y_ALL))
    assert {variant_of(label) for label in timed} == {n for n, v in REGISTRY.items() if v.benchmark}
    assert {n: plotting.color(n) for n in REGISTRY} == {n: v.color for n, v in REGISTRY.items()}
    assert len({v.color for v in REGISTRY.values()}) == len(REGISTRY)


def test_a_newly_registered_variant_is_swept_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering is all it takes: the contract tables, TrainConfig, the benchmark and the colours
    pick a new variant up (here a toy: SAM with an adaptive perturbation under another name)."""
    from sam_tutorial.chapters import plotting
    from sam_tutorial.engine import bench
    from sam_tutorial.engine.train_config import TrainConfig

    toy = Variant("toy-sam", "Toy-SAM", REGISTRY["sam"].cls, fixed={"adaptive": True}, color="#000001")
    monkeypatch.setitem(REGISTRY, toy.name, toy)
    assert "toy-sam" in factories() and "toy-sam" in bench.variants(16, (4,), ("loop",), (X_ALL, Y_ALL))
    assert TrainConfig(optimizer="toy-sam", rho=0.05).optimizer == "toy-sam"
    assert plotting.color("toy-sam-rho0.05") == "#000001"


def test_registry_refuses_what_the_class_does_not_take() -> None:
    with pytest.raises(ValueError, match="does not take"):
        Variant("bad", "Bad", MSAM, fixed={"lam": 1.0})
    with pytest.raises(ValueError, match="must be one of"):
        make("msam", mlp(), sgd(mlp()), rho=0.1, m=4)


def test_old_vmap_chunk_size_is_a_deprecated_alias() -> None:
    a, b = mlp(), mlp()
    with pytest.warns(DeprecationWarning, match="micro_batches_per_call"):
        old = MSAM(a, sgd(a), rho=0.1, m=4, backend="vmap", vmap_chunk_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = MSAM(b, sgd(b), rho=0.1, m=4, backend="vmap", micro_batches_per_call=2)
    assert old.micro_batches_per_call == new.micro_batches_per_call == 2
    with pytest.raises(ValueError, match="vmap_chunk_size must be an integer"), \
            pytest.warns(DeprecationWarning):
        MSAM(a, sgd(a), rho=0.1, m=4, vmap_chunk_size=0)
