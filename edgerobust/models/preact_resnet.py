"""Pre-activation ResNet-18 for CIFAR (He et al., "Identity Mappings in Deep Residual Networks", 2016)."""
from __future__ import annotations

from torch import Tensor, nn

from .registry import MODELS


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(x))
        # A projection shortcut takes the pre-activated input, as in the paper.
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return out + skip


class PreActResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        stages = []
        cin = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            layers = []
            for j in range(n):
                layers.append(PreActBlock(cin, width, 2 if i > 0 and j == 0 else 1))
                cin = width
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        # The last block's sum is not activated; the paper adds BN + ReLU before pooling
        # (kuangliu's pytorch-cifar omits it, hence 1,024 params fewer there).
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(self.flatten(self.pool(x)))


@MODELS.register("preactresnet18", "PreAct ResNet-18 for CIFAR: blocks 2-2-2-2, widths 64-512 (11.17M params)")
def preactresnet18(input_shape, num_classes):
    return PreActResNet(input_shape[0], num_classes)
