"""A user's own model package, written by the tests into a temporary directory put on sys.path: import-path
factories, and an installed-looking distribution (a dist-info directory with entry_points.txt) registering one
model in the `edgerobust.models` group."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

NETS = '''
import torch
from torch import nn


class Scale(nn.Module):
    """A layer torch-pruning knows nothing about: a learnt per-channel gain."""

    def __init__(self, channels):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x):
        return x * self.gain


class Drone(nn.Module):
    """Conv-BN-ReLU, a residual block and a linear head: a graph of the user's, not the zoo's."""

    def __init__(self, num_classes, width=8, in_channels=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1))
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(self.down(x))


def drone(num_classes, width=8, in_channels=3):
    return Drone(num_classes, width, in_channels)


def scaled(num_classes, width=6, in_channels=3):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), Scale(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))


def broken(**kwargs):
    raise ValueError("the drone weights are not configured")


def not_a_module(**kwargs):
    return [1, 2, 3]


NOT_CALLABLE = 3
'''

DIST_INFO = "dronenets-1.2.0.dist-info"


def write_package(root: Path, name: str = "dronenets") -> Path:
    """ROOT/dronenets/{__init__,nets}.py and ROOT/dronenets-1.2.0.dist-info (METADATA, top_level.txt and an
    entry point `drone-ep = dronenets.nets:drone`)."""
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "nets.py").write_text(NETS)
    info = root / DIST_INFO
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.0\n")
    (info / "top_level.txt").write_text(f"{name}\n")
    (info / "entry_points.txt").write_text(f"[edgerobust.models]\ndrone-ep = {name}.nets:drone\n")
    return root


def install(root: Path) -> None:
    """Put the package's directory first on sys.path (what `pip install` would amount to, for the tests)."""
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()


def uninstall(root: Path, name: str = "dronenets") -> None:
    if str(root) in sys.path:
        sys.path.remove(str(root))
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]
    importlib.invalidate_caches()


@pytest.fixture()
def package(tmp_path):
    """The package written under tmp_path and put on sys.path for one test (a fixture of conftest.py)."""
    root = write_package(tmp_path / "site")
    install(root)
    yield root
    uninstall(root)
