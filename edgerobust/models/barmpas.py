"""Barmpas's ReLU-only networks (kernel 4, stride 2, padding 1; no max-pool) and his students.

Teachers and `scnn2:c1-c2` students are certification-friendly (Conv/ReLU/Linear only).
SNN / SCNN-1 use the earlier chapters' max-pool layout.
"""
from __future__ import annotations

from torch import nn

from .registry import MODELS


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1)


def _after_convs(size: int, n: int) -> int:
    for _ in range(n):
        size = (size + 2 - 4) // 2 + 1
    return size


def relu_convnet(input_shape, num_classes, channels, hidden) -> nn.Sequential:
    c, h, w = input_shape
    layers: list[nn.Module] = []
    cin = c
    for cout in channels:
        layers += [_conv(cin, cout), nn.ReLU()]
        cin = cout
    flat = cin * _after_convs(h, len(channels)) * _after_convs(w, len(channels))
    layers += [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(flat, width), nn.ReLU()]
        flat = width
    layers.append(nn.Linear(flat, num_classes))
    return nn.Sequential(*layers)


@MODELS.register("svhn-teacher", "Barmpas SVHN teacher: ReLU conv 16-16-32-32, FC 100 (~45k params at 3x32x32)")
def svhn_teacher(input_shape, num_classes):
    return relu_convnet(input_shape, num_classes, (16, 16, 32, 32), (100,))


@MODELS.register("cifar-teacher", "Barmpas CIFAR teacher: ReLU conv 32-32-64-64, FC 512")
def cifar_teacher(input_shape, num_classes):
    return relu_convnet(input_shape, num_classes, (32, 32, 64, 64), (512,))


@MODELS.register("scnn2", "Barmpas student SCNN-2 c1-c2: two ReLU convs (k4 s2 p1), FC hidden (default 100)")
def scnn2(input_shape, num_classes, c1: int = 16, c2: int = 32, hidden: int = 100):
    return relu_convnet(input_shape, num_classes, (c1, c2), (hidden,))


@MODELS.register("snn", "Barmpas shallow student SNN: one hidden fully-connected layer (default 512)")
def snn(input_shape, num_classes, hidden: int = 512):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


@MODELS.register("scnn1", "Barmpas student SCNN-1: conv 3x3 + max-pool + FC (default 32 channels)")
def scnn1(input_shape, num_classes, channels: int = 32):
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(channels * (h // 2) * (w // 2), num_classes))


@MODELS.register("mlp", "plain ReLU MLP with the given hidden widths (default 128-64)")
def mlp(input_shape, num_classes, *hidden: int):
    c, h, w = input_shape
    layers: list[nn.Module] = [nn.Flatten()]
    width = c * h * w
    for size in hidden or (128, 64):
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
