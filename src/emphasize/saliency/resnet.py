"""ResNet-50 trunk (He et al. 2016, "v1.5" variant: stride on the 3x3 conv) with torchvision's module names.

Written here because torchvision is not a dependency. `resnet50_stages()` returns the first eight children of
`torchvision.models.resnet50()` (`conv1, bn1, relu, maxpool, layer1..layer4`), which is how TranSalNet slices it;
inside each stage the attribute names and registration order are torchvision's (`0.conv1`, `0.bn1`, ...,
`0.downsample.0`, `0.downsample.1`), so state-dict keys line up one for one.

Shapes for a (B, 3, 288, 384) input: layer1 (B, 256, 72, 96), layer2 (B, 512, 36, 48), layer3 (B, 1024, 18, 24),
layer4 (B, 2048, 9, 12).
"""

from __future__ import annotations

import torch
from torch import nn

# blocks per stage and bottleneck widths of ResNet-50
_BLOCKS = (3, 4, 6, 3)
_WIDTHS = (64, 128, 256, 512)
_EXPANSION = 4  # bottleneck output channels = width * 4


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, each followed by BatchNorm, plus a shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        """Build one block.

        Args:
            in_channels: channels coming in.
            width: bottleneck width; the block outputs `width * 4` channels.
            stride: spatial stride of the 3x3 conv and of the projection shortcut.
        """
        super().__init__()
        out_channels = width * _EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            # projection shortcut: torchvision names its parts downsample.0 (conv) and downsample.1 (bn)
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _stage(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet stage: the first block changes stride/channels, the rest keep them."""
    layers = [Bottleneck(in_channels, width, stride)]
    layers += [Bottleneck(width * _EXPANSION, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_weights(modules: list[nn.Module]) -> None:
    """torchvision's initialization: He-normal (fan_out) convs, BatchNorm at identity."""
    for root in modules:
        for m in root.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def resnet50_stages() -> list[nn.Module]:
    """The eight modules `conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4` of ResNet-50, in order.

    Returns:
        A list whose indices are those of `list(torchvision.models.resnet50().children())[:8]`; layer2, layer3 and
        layer4 (indices 5, 6, 7) run at strides 8, 16 and 32 with 512, 1024 and 2048 channels.
    """
    stem = [
        nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    ]
    stages = []
    in_channels = 64
    for i, (width, blocks) in enumerate(zip(_WIDTHS, _BLOCKS, strict=True)):
        stages.append(_stage(in_channels, width, blocks, stride=1 if i == 0 else 2))
        in_channels = width * _EXPANSION
    modules = stem + stages
    _init_weights(modules)
    return modules
