"""Networks: an MLP, a 1-D CNN for MNIST-1D, ResNet-18/50 and Wide ResNets for CIFAR (no torchvision).

=============== ======================================================= ==============================
name            architecture                                            parameters (10 classes)
=============== ======================================================= ==============================
``mlp``         Flatten, Linear-ReLU per hidden width, Linear           40-256-256-10: 78,858
``cnn1d``       Greydanus's MNIST-1D ConvBase: 3 Conv1d (stride 2)      25 channels: 5,210
``resnet18``    He et al. 2016 for CIFAR: 3x3 stem, no max-pool          11,173,962
``resnet50``    the same with bottleneck blocks                         23,520,842
``wrn28-10``    Zagoruyko & Komodakis 2016, pre-activation, depth 28    36,479,194
``wrn16-4``     a small WRN for CPU runs                                2,748,890
=============== ======================================================= ==============================

The CIFAR ResNets are the ImageNet ones (He et al.; ``torchvision.models.resnet18/50``: 11,689,512 and
25,557,032 parameters) with the 7x7 stride-2 stem and the max-pool replaced by a 3x3 stride-1
convolution and a 10-way classifier: 11,689,512 - 3*64*49 + 3*64*9 - (512*1000+1000) + (512*10+10)
= 11,173,962, and for ResNet-50 25,557,032 - 9,408 + 1,728 - 2,049,000 + 20,490 = 23,520,842; this is
the layout of the SAM/EigenSAM code bases (``kuangliu/pytorch-cifar``). ``width`` scales every
channel count (64 is the paper's model; 8 or 16 make CPU-sized versions). ``norm="gn"`` swaps every
BatchNorm for a GroupNorm with ``min(32, channels)`` groups (the same parameter count, no running
statistics; m-SAM's vmap backend and per-sample gradients then need no special care).

>>> count_parameters(build_model("mlp", num_classes=10, input_shape=(40,)))
78858
"""


from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sam_tutorial.config import check_int, check_nonneg

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CNN1D",
    "MLP",
    "MODELS",
    "ModelFactory",
    "NORMS",
    "ResNet",
    "WideBlock",
    "WideResNet",
    "build_model",
    "count_parameters",
]


NORMS = ("bn", "gn")


def count_parameters(model: nn.Module) -> int:
    """The number of trainable parameters (entries of tensors with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _norm2d(norm: str, channels: int) -> nn.Module:
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")


class MLP(nn.Sequential):
    """Flatten, then ``Linear -> ReLU`` for each hidden width, then a linear classifier.

    Args:
        in_features: input size (inputs are flattened).
        num_classes: output size.
        hidden: hidden widths.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 256)) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class CNN1D(nn.Module):
    """The MNIST-1D convolutional baseline (Greydanus 2020, ``ConvBase``), for any input length.

    ``Conv1d(1, c, 5, stride 2, pad 1) -> ReLU -> Conv1d(c, c, 3, 2, 1) -> ReLU -> Conv1d(c, c, 3, 2, 1)
    -> ReLU -> Linear``. Inputs ``[B, L]`` or ``[B, 1, L]``.

    Args:
        length: signal length L (40 for MNIST-1D).
        num_classes: output size.
        channels: convolution channels c.
    """

    def __init__(self, length: int = 40, num_classes: int = 10, channels: int = 25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        out_len = length
        for k in (5, 3, 3):
            out_len = (out_len + 2 - k) // 2 + 1
        self.classifier = nn.Linear(channels * out_len, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm2d(norm, planes)
        self.shortcut = _shortcut(cin, planes, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convolutions, 4x expansion, residual connection (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, norm: str) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = _norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _norm2d(norm, planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = _norm2d(norm, out)
        self.shortcut = _shortcut(cin, out, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int, norm: str) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm2d(norm, cout))


class ResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, four stages (strides 1, 2, 2, 2), global average pool.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for ResNet-50.
        num_classes: output size.
        width: channels of the first stage (64 in the paper; stages use width x 1, 2, 4, 8).
        norm: ``"bn"`` (BatchNorm) or ``"gn"`` (GroupNorm).
        in_channels: input channels.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 10,
        width: int = 64,
        norm: str = "bn",
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        _check_norm(norm)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False), _norm2d(norm, width), nn.ReLU()
        )
        stages: list[nn.Module] = []
        cin = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks: list[nn.Module] = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1, norm))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))))


class WideBlock(nn.Module):
    """Pre-activation wide block: norm-ReLU-conv3x3-norm-ReLU-(dropout)-conv3x3 plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, dropout: float) -> None:
        super().__init__()
        self.bn1 = _norm2d(norm, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _norm2d(norm, cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Identity()
            if (cin == cout and stride == 1)
            else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        o = torch.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(self.dropout(torch.relu(self.bn2(y))))
        # the projection shortcut sees the pre-activated input, as in the reference implementation
        return y + (self.shortcut(o) if not isinstance(self.shortcut, nn.Identity) else x)


class WideResNet(nn.Module):
    """Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016) for 32x32 inputs.

    Args:
        depth: 6n + 4 (28 gives n = 4 blocks per stage).
        widen_factor: k; the stages have 16k, 32k and 64k channels.
        num_classes: output size.
        norm: ``"bn"`` or ``"gn"``.
        dropout: dropout rate inside the blocks (0 in the SAM papers).
        in_channels: input channels.

    Raises:
        ValueError: if ``depth`` is not 6n + 4 with n >= 1, or ``widen_factor`` < 1.
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        norm: str = "bn",
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        _check_norm(norm)
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        check_int("widen_factor", widen_factor)
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(WideBlock(cin, w, 2 if (i > 0 and j == 0) else 1, norm, dropout))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(_norm2d(norm, cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.blocks(self.stem(x))))


ModelFactory = Callable[..., nn.Module]


def _mlp(num_classes: int, input_shape: Sequence[int], hidden: Sequence[int] = (256, 256)) -> nn.Module:
    return MLP(math.prod(input_shape), num_classes, hidden)


def _cnn1d(num_classes: int, input_shape: Sequence[int], channels: int = 25) -> nn.Module:
    return CNN1D(int(input_shape[-1]), num_classes, channels)


def _image_channels(input_shape: Sequence[int]) -> int:
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W) for this model, got {tuple(input_shape)}")
    return int(input_shape[0])


MODELS: dict[str, ModelFactory] = {
    "mlp": _mlp,
    "cnn1d": _cnn1d,
    "resnet18": lambda num_classes, input_shape, width=64, norm="bn": ResNet(
        BasicBlock, (2, 2, 2, 2), num_classes, width, norm, _image_channels(input_shape)
    ),
    "resnet50": lambda num_classes, input_shape, width=64, norm="bn": ResNet(
        Bottleneck, (3, 4, 6, 3), num_classes, width, norm, _image_channels(input_shape)
    ),
    "wrn28-10": lambda num_classes, input_shape, norm="bn", dropout=0.0: WideResNet(
        28, 10, num_classes, norm, dropout, _image_channels(input_shape)
    ),
    "wrn16-4": lambda num_classes, input_shape, norm="bn", dropout=0.0: WideResNet(
        16, 4, num_classes, norm, dropout, _image_channels(input_shape)
    ),
    "wrn": lambda num_classes, input_shape, depth=16, widen_factor=2, norm="bn", dropout=0.0: WideResNet(
        depth, widen_factor, num_classes, norm, dropout, _image_channels(input_shape)
    ),
}
"""The model factories, by name; each is called as ``factory(num_classes, input_shape, **options)``."""


def build_model(name: str, *, num_classes: int, input_shape: Sequence[int], **options: Any) -> nn.Module:
    """Build a model by name (see :data:`MODELS` and the module table).

    Args:
        name: one of :data:`MODELS`.
        num_classes: output size.
        input_shape: the shape of one input, e.g. ``(40,)`` or ``(3, 32, 32)``.
        **options: the model's own options (``hidden``, ``channels``, ``width``, ``norm``, ``depth``,
            ``widen_factor``, ``dropout``).

    Raises:
        ValueError: for an unknown ``name``, an option the model does not take, or a bad option value
            (``num_classes``, ``input_shape`` entries, widths and channels must be integers >= 1, dropout
            in [0, 1)).
    """
    if name not in MODELS:
        raise ValueError(f"name must be one of {', '.join(MODELS)}; got {name!r}")
    check_int("num_classes", num_classes)
    if isinstance(input_shape, str | bytes) or not isinstance(input_shape, Sequence) or not input_shape:
        raise ValueError(f"input_shape must be the shape of one input, e.g. (40,) or (3, 32, 32); got "
                         f"{input_shape!r}")
    for size in input_shape:
        check_int("input_shape entries", size)
    for key in ("width", "channels", "depth", "widen_factor"):
        if key in options:
            check_int(key, options[key])
    if "hidden" in options:
        hidden = options["hidden"]
        if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
            raise ValueError(f"hidden must be a sequence of widths, e.g. (256, 256); got {hidden!r}")
        for h in hidden:
            check_int("hidden widths", h)
    if "dropout" in options:
        check_nonneg("dropout", options["dropout"], below=1)
    try:
        return MODELS[name](num_classes, tuple(input_shape), **options)
    except TypeError as err:
        raise ValueError(f"model {name!r}: {err}") from err
