"""MobileNetV2 for CIFAR (Sandler et al. 2018), in the layout of kuangliu's pytorch-cifar.

CIFAR changes to the ImageNet net: stride-1 stem and a stride-1 second stage, so 32x32 ends at 4x4.
Blocks follow the paper (residual only when stride 1 and widths match; no expansion conv when t=1),
which gives 2,236,682 params at 10 classes; kuangliu's blocks also add 1x1 projection shortcuts.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import EdgeRobustError
from .registry import MODELS

# (expansion t, output channels c, repeats n, first stride s)
CIFAR_CONFIG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))


def _divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of 8 without losing more than 10%, as the reference does."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6()] if act else layers


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers = _conv_bn(cin, hidden, 1) if expansion != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)  # depthwise
        layers += _conv_bn(hidden, cout, 1, act=False)  # linear bottleneck
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width_percent: int = 100):
        super().__init__()
        mult = width_percent / 100
        cin = _divisible(32 * mult)
        layers = _conv_bn(in_channels, cin, 3, 1)
        for t, c, n, s in CIFAR_CONFIG:
            cout = _divisible(c * mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _divisible(1280 * max(1.0, mult))  # the paper never thins the last layer
        layers += _conv_bn(cin, last, 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


@MODELS.register("mobilenetv2", "MobileNetV2 for CIFAR (stride-1 stem, 2.24M params); optional width in percent, "
                 "e.g. mobilenetv2:50")
def mobilenetv2(input_shape, num_classes, width_percent: int = 100):
    if width_percent <= 0:
        raise EdgeRobustError(f"mobilenetv2:{width_percent}: the width multiplier is a positive percentage, "
                              "e.g. mobilenetv2:50")
    return MobileNetV2(input_shape[0], num_classes, width_percent)
