"""INT8 calibration inputs for TensorRT: a seeded, class-balanced sample of real training images, saved as .npz."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.base import ArrayDataset
from ..io import atomic_path

CALIBRATION_NAME = "calibration.npz"


def calibration_sample(dataset: ArrayDataset, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Round-robin over classes (each class shuffled with `seed`) so every class is represented."""
    generator = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(dataset.labels == c).flatten() for c in range(dataset.num_classes)]
    per_class = [idx[torch.randperm(len(idx), generator=generator)] for idx in per_class if len(idx)]
    order = [idx[i] for i in range(max(map(len, per_class), default=0)) for idx in per_class if i < len(idx)]
    chosen = torch.stack(order[:count]) if order and count > 0 else torch.zeros(0, dtype=torch.long)
    return dataset.images[chosen].numpy().astype(np.float32), dataset.labels[chosen].numpy().astype(np.int64)


def save_calibration(path: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """`input` (N,C,H,W float32 pixels in [0,1]) and `labels`; np.load reads it on numpy 1.19 / Python 3.6."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, input=images, labels=labels)
    return Path(path)
