"""The in-memory dataset every loader returns: NCHW float32 pixels in [0,1] and integer labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import DataError


@dataclass
class ArrayDataset:
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor | None  # (N,) int64 in [0, num_classes); None: unlabelled (for losses making targets)
    num_classes: int
    name: str
    split: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.ndim != 4:
            raise DataError(f"{self.name}: images must be NCHW, got shape {tuple(self.images.shape)}")
        if self.labels is not None and len(self.images) != len(self.labels):
            raise DataError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        self.images = self.images.to(torch.float32).contiguous()
        self.labels = None if self.labels is None else self.labels.to(torch.int64)
        channels = self.images.shape[1]
        if not self.mean:
            self.mean = tuple(self.images.mean(dim=(0, 2, 3)).tolist()) if len(self) else (0.5,) * channels
        if not self.std:
            std = self.images.std(dim=(0, 2, 3)) if len(self) > 1 else torch.ones(channels)
            self.std = tuple(std.clamp_min(1e-3).tolist())

    def __len__(self) -> int:
        return len(self.images)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, n: int | None = None, *, indices: torch.Tensor | None = None) -> ArrayDataset:
        if indices is None:
            indices = torch.arange(min(n, len(self)) if n is not None else len(self))
        labels = None if self.labels is None else self.labels[indices]
        return ArrayDataset(self.images[indices], labels, self.num_classes, self.name,
                            self.split, self.mean, self.std, dict(self.info))

    def describe(self) -> dict:
        return {"name": self.name, "split": self.split, "size": len(self), "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "mean": list(self.mean), "std": list(self.std), **self.info}
