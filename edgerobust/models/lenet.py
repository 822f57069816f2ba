"""LeNet-5 (LeCun et al. 1998) with ReLU and max-pool, padded so 8x8 inputs fit."""
from __future__ import annotations

from torch import nn

from .registry import MODELS


def _conv2_padding(size: int) -> int:
    # After conv1 (padded) and one pool, a 5x5 conv needs at least 5 pixels; 8x8 digits leave only 4.
    return 0 if size // 2 >= 5 else 2


@MODELS.register("lenet5", "LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, FC 120-84 (ReLU, max-pool)")
def lenet5(input_shape, num_classes):
    c, h, w = input_shape
    pad_h, pad_w = _conv2_padding(h), _conv2_padding(w)
    # conv1 is padded by 2 (as for 28x28 MNIST), so its output keeps the input size.
    flat_h = (h // 2 + 2 * pad_h - 4) // 2
    flat_w = (w // 2 + 2 * pad_w - 4) // 2
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=(pad_h, pad_w)), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * max(flat_h, 1) * max(flat_w, 1), 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )
