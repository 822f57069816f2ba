"""Barmpas student SCNN-2 in the max-pool layout of the earlier chapters: CV-MP-CV-MP-FC."""
from __future__ import annotations

from torch import nn

from ..errors import EdgeRobustError
from .registry import MODELS


@MODELS.register("scnn2-mp", "Barmpas student SCNN-2 c1-c2 with max-pool: conv 3x3, pool, conv 3x3, pool, FC "
                 "(default 16-32)")
def scnn2_mp(input_shape, num_classes, c1: int = 16, c2: int = 32):
    if min(c1, c2) <= 0:
        raise EdgeRobustError(f"scnn2-mp:{c1}-{c2}: channel counts must be positive, e.g. scnn2-mp:16-32")
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4), num_classes),
    )
