"""A classifier defined outside edgerobust, as a user's own package would define it.

edgerobust builds it from the recipe's `[model] spec = "dronenet:dronenet"` (module:factory, importable from the
directory the command runs in, or from an installed package) with `[model] kwargs`; `num_classes` and
`in_channels` are filled in from the dataset because the factory takes them.
"""
import torch
from torch import nn


class DroneNet(nn.Module):
    """Conv-BN-ReLU stem, one residual block, a strided conv and a linear head; takes [0,1] pixels."""

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1))
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(self.down(x))


def dronenet(num_classes: int, width: int = 16, in_channels: int = 3) -> nn.Module:
    return DroneNet(num_classes, width, in_channels)
