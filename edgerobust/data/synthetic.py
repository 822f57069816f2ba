"""Seeded random data of any shape, for tests and benchmarks."""
from __future__ import annotations

import torch

from ..errors import DataError
from .base import ArrayDataset
from .registry import DATASETS


@DATASETS.register("synthetic", "seeded random images of any shape (options: shape, num_classes, size, seed)")
def load_synthetic(split: str = "train", root=None, shape=(3, 32, 32), num_classes: int = 10,
                   size: int | None = None, seed: int = 0, **_) -> ArrayDataset:
    """Class-dependent mean images plus noise, so that a model can learn it (a benchmark measures real work)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"synthetic shape must be C,H,W with positive sizes, got {shape}")
    if num_classes < 2:
        raise DataError("synthetic data needs at least 2 classes")
    size = size or (1024 if split == "train" else 256)
    prototypes = torch.rand((num_classes, *shape), generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed * 1000 + (0 if split == "train" else 1))
    labels = torch.randint(0, num_classes, (size,), generator=gen)
    noise = torch.randn((size, *shape), generator=gen) * 0.15
    images = (prototypes[labels] + noise).clamp(0, 1)
    return ArrayDataset(images, labels, num_classes, "synthetic", split, (0.5,) * shape[0], (0.3,) * shape[0],
                        {"seed": seed})
