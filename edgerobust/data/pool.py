"""An unlabelled image pool from other datasets' images (for distillation), shaped to a target input."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DataError
from .registry import load_dataset


def to_shape(images: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Convert NCHW images to (C,H,W) = shape: grey<->RGB by repeat/mean, bilinear resize (antialiased)."""
    channels, height, width = shape
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.repeat(1, channels, 1, 1)
        elif channels == 1:
            images = images.mean(1, keepdim=True)
        else:
            raise DataError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")
    if tuple(images.shape[2:]) != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return images.clamp(0, 1)


def unlabelled_pool(sources: Sequence[str], shape: Sequence[int], size: int | None = None, seed: int = 0,
                    split: str = "train", root: str | Path | None = None) -> torch.Tensor:
    """Images (labels dropped) from `sources`, converted to `shape`, shuffled, at most `size` of them."""
    if not sources:
        raise DataError("an unlabelled pool needs at least one source dataset")
    parts = [to_shape(load_dataset(name, split, root).images, shape) for name in sources]
    images = torch.cat(parts)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order[:size] if size else order]
