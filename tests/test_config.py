"""Tests for sam_tutorial.config: mode parsing, device override, seeding, budgets."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sam_tutorial import config


@pytest.mark.parametrize("value", ["quick", "standard", "paper", " Quick ", "PAPER"])
def test_mode_reads_the_environment(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SAM_TUTORIAL_MODE", value)
    assert config.mode() == value.strip().lower()


@pytest.mark.parametrize("value", [None, ""])
def test_mode_defaults_to_standard(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("SAM_TUTORIAL_MODE", raising=False)
    else:
        monkeypatch.setenv("SAM_TUTORIAL_MODE", value)
    assert config.mode() == "standard"


@pytest.mark.parametrize("value", ["full", "fast", "1", "quick,standard"])
def test_unknown_mode_names_the_valid_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SAM_TUTORIAL_MODE", value)
    with pytest.raises(ValueError) as err:
        config.mode()
    message = str(err.value)
    assert "SAM_TUTORIAL_MODE" in message and repr(value) in message
    for valid in config.MODES:
        assert valid in message


def test_device_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAM_TUTORIAL_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert config.device().type == expected
    monkeypatch.setenv("SAM_TUTORIAL_DEVICE", "cpu")
    assert config.device() == torch.device("cpu")


def test_device_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAM_TUTORIAL_DEVICE", "gpu-please")
    with pytest.raises(ValueError, match="SAM_TUTORIAL_DEVICE"):
        config.device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_device_rejects_cuda_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAM_TUTORIAL_DEVICE", "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        config.device()


def _draw() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(5)


def test_seed_everything_reproduces_every_generator() -> None:
    gen_a = config.seed_everything(123)
    first = _draw()
    from_gen_a = torch.rand(3, generator=gen_a)
    gen_b = config.seed_everything(123)
    second = _draw()
    from_gen_b = torch.rand(3, generator=gen_b)
    assert first[:2] == second[:2]
    assert torch.equal(first[2], second[2])
    assert torch.equal(from_gen_a, from_gen_b)
    config.seed_everything(124)
    assert not torch.equal(_draw()[2], first[2])


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True])
def test_seed_everything_rejects_bad_seeds(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        config.seed_everything(seed)  # type: ignore[arg-type]


def test_banner_names_mode_device_and_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAM_TUTORIAL_MODE", "quick")
    monkeypatch.setenv("SAM_TUTORIAL_DEVICE", "cpu")
    assert config.banner() == f"mode=quick device=cpu torch={torch.__version__}"


def test_budget_picks_the_current_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    knobs = dict(quick=dict(epochs=1, seeds=1), standard=dict(epochs=30, seeds=3))
    monkeypatch.setenv("SAM_TUTORIAL_MODE", "quick")
    quick = config.budget("ch", **knobs)
    assert (quick.mode, quick.epochs, quick.seeds, quick.seconds) == ("quick", 1, 1, 60.0)
    monkeypatch.setenv("SAM_TUTORIAL_MODE", "standard")
    standard = config.budget("ch", **knobs)
    assert (standard.epochs, standard.seeds, standard.seconds) == (30, 3, 180.0)
    # paper defaults to the standard settings; with no wall-clock limit
    paper = config.budget("ch", **knobs, current="paper")
    assert (paper.epochs, paper.seconds) == (30, None)
    explicit = config.budget("ch", **knobs, paper=dict(epochs=200, seeds=3), current="paper")
    assert explicit.epochs == 200


def test_budget_requires_the_same_settings_in_every_mode() -> None:
    with pytest.raises(ValueError, match=r"mode 'quick'.*missing: \['seeds'\]"):
        config.budget("ch", quick=dict(epochs=1), standard=dict(epochs=3, seeds=3))
    with pytest.raises(ValueError, match=r"mode 'paper'.*extra: \['width'\]"):
        config.budget(
            "ch", quick=dict(epochs=1), standard=dict(epochs=3), paper=dict(epochs=9, width=4)
        )


def test_budget_is_read_only_and_names_unknown_settings() -> None:
    b = config.budget("ch", quick=dict(epochs=1), standard=dict(epochs=3), current="standard")
    with pytest.raises(AttributeError, match="has no setting 'seeds'.*epochs"):
        _ = b.seeds
    with pytest.raises(TypeError):
        b.knobs["epochs"] = 5  # type: ignore[index]
    with pytest.raises(ValueError, match="current='huge'"):
        config.budget("ch", quick={}, standard={}, current="huge")  # type: ignore[arg-type]
