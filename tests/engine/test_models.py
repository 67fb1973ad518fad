"""Tests for sam_tutorial.engine.models: parameter counts against published numbers, shapes, options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam_tutorial.engine.models import CNN1D, MODELS, build_model, count_parameters

CIFAR = (3, 32, 32)

# torchvision's ImageNet models (He et al. 2016), as its documentation lists them
TORCHVISION_RESNET18 = 11_689_512
TORCHVISION_RESNET50 = 25_557_032


def cifar_from_imagenet(imagenet: int, features: int, classes: int = 10) -> int:
    """The CIFAR variant: 3x3 stride-1 stem instead of 7x7 (3 -> 64 channels), ``classes`` outputs."""
    stem = 3 * 64 * 49 - 3 * 64 * 9
    head = (features * 1000 + 1000) - (features * classes + classes)
    return imagenet - stem - head


def meta_count(name: str, classes: int = 10, **options: object) -> int:
    with torch.device("meta"):  # no memory, no initialisation cost
        return count_parameters(build_model(name, num_classes=classes, input_shape=CIFAR, **options))


def test_resnet18_count_matches_the_published_one() -> None:
    assert cifar_from_imagenet(TORCHVISION_RESNET18, 512) == 11_173_962
    assert meta_count("resnet18") == 11_173_962


def test_resnet50_count_matches_the_published_one() -> None:
    assert cifar_from_imagenet(TORCHVISION_RESNET50, 2048) == 23_520_842
    assert meta_count("resnet50") == 23_520_842


def test_wrn28_10_count_matches_the_published_one() -> None:
    # Zagoruyko & Komodakis report 36.5M; 36,479,194 is the exact count of their CIFAR-10 model
    assert meta_count("wrn28-10") == 36_479_194
    # 100 classes: the classifier grows by 640 * 90 + 90
    assert meta_count("wrn28-10", classes=100) == 36_479_194 + 640 * 90 + 90


def test_mlp_and_cnn1d_counts_are_their_closed_forms() -> None:
    mlp = build_model("mlp", num_classes=10, input_shape=(40,), hidden=(256, 256))
    assert count_parameters(mlp) == (40 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)
    cnn = CNN1D(40, 10, channels=25)
    # lengths 40 -> 19 -> 10 -> 5; three convolutions with bias, then 25 * 5 -> 10
    assert count_parameters(cnn) == (25 * 5 + 25) + 2 * (25 * 25 * 3 + 25) + (125 * 10 + 10)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "wrn28-10", "wrn16-4"])
def test_groupnorm_has_the_same_parameters_and_no_buffers(name: str) -> None:
    assert meta_count(name, norm="gn") == meta_count(name)
    with torch.device("meta"):
        model = build_model(name, num_classes=10, input_shape=CIFAR, norm="gn")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert list(model.buffers()) == []


@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [
        ("mlp", (40,), {"hidden": (8,)}),
        ("mlp", (1, 8, 8), {"hidden": (8, 8)}),
        ("cnn1d", (40,), {"channels": 8}),  # with 4 channels seed 0 starts with every unit of layer 3 dead
        ("resnet18", CIFAR, {"width": 4}),
        ("resnet50", CIFAR, {"width": 2, "norm": "gn"}),
        ("wrn", CIFAR, {"depth": 10, "widen_factor": 1}),
    ],
)
def test_forward_shapes(name: str, shape: tuple[int, ...], options: dict[str, object]) -> None:
    """Shape [B, classes]; in eval mode each sample's output is computed from that sample alone (the
    batch of two equals the two samples one by one, and they differ); every parameter is used."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, input_shape=shape, **options).double()
    x = torch.randn(2, *shape, dtype=torch.float64)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())  # every parameter is in the graph
    model.eval()
    with torch.no_grad():
        both, one_by_one = model(x), torch.cat([model(x[:1]), model(x[1:])])
    torch.testing.assert_close(both, one_by_one, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(both[0], both[1])


def test_cnn1d_takes_signals_with_or_without_channel_axis() -> None:
    torch.manual_seed(0)
    cnn = CNN1D(40, 10, channels=3)
    x = torch.randn(4, 40)
    assert torch.equal(cnn(x), cnn(x.unsqueeze(1)))


def test_resnet_downsamples_three_times() -> None:
    """CIFAR layout: 32x32 input, stages at 32, 16, 8, 4 (no stride-2 stem, no max-pool)."""
    model = build_model("resnet18", num_classes=10, input_shape=CIFAR, width=4)
    sizes = []
    x = model.stem(torch.randn(1, *CIFAR))
    for stage in model.stages:
        x = stage(x)
        sizes.append(x.shape[-1])
    assert sizes == [32, 16, 8, 4] and x.shape[1] == 32


def test_bad_names_and_options_raise_value_error() -> None:
    with pytest.raises(ValueError, match=", ".join(MODELS)):
        build_model("vgg16", num_classes=10, input_shape=CIFAR)
    with pytest.raises(ValueError, match="model 'mlp'"):
        build_model("mlp", num_classes=10, input_shape=(40,), width=3)
    with pytest.raises(ValueError, match="norm must be one of bn, gn"):
        build_model("resnet18", num_classes=10, input_shape=CIFAR, norm="ln")
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        build_model("wrn", num_classes=10, input_shape=CIFAR, depth=12)
    with pytest.raises(ValueError, match="input_shape must be \\(C, H, W\\)"):
        build_model("resnet18", num_classes=10, input_shape=(40,))
