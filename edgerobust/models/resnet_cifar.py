"""CIFAR-style ResNets: 3x3 stem, no max-pool, global average pooling (He et al. 2016).

Downsampling shortcuts are 1x1 conv + BN projections (option B) rather than option A's zero-padding,
so every residual add joins plain modules that torch-pruning can trace and ONNX can export.
"""
from __future__ import annotations

from torch import Tensor, nn

from .registry import MODELS


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages = []
        cin = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(cin, width, 2 if i > 0 and j == 0 else 1))
                cin = width
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        # Adaptive pooling: 8x8 inputs end at 1x1 after the strided stages instead of failing.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(x)))


@MODELS.register("resnet20", "CIFAR ResNet-20: 3 stages of 3 BasicBlocks, widths 16-32-64 (272,474 params)")
def resnet20(input_shape, num_classes):
    return CifarResNet(input_shape[0], num_classes, (16, 32, 64), (3, 3, 3))


@MODELS.register("resnet34", "CIFAR ResNet-34: BasicBlocks 3-4-6-3, widths 64-512, 3x3 stem (21.28M params)")
def resnet34(input_shape, num_classes):
    return CifarResNet(input_shape[0], num_classes, (64, 128, 256, 512), (3, 4, 6, 3))
