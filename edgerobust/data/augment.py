"""Standard batch augmentations (random crop with padding, horizontal flip, small rotation); off in eval."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    crop_padding: int = 0
    flip: bool = False
    rotation_degrees: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.rotation_degrees)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            x = random_flip(x, generator)
        if self.rotation_degrees:
            x = random_rotation(x, self.rotation_degrees, generator)
        return x

    def describe(self) -> dict:
        return {"crop_padding": self.crop_padding, "flip": self.flip, "rotation_degrees": self.rotation_degrees}


NO_AUGMENT = Augment()


def default_augment(dataset_name: str) -> Augment:
    """What the field uses per dataset: crop+flip for natural images, small shifts/rotations for digits."""
    if dataset_name in ("cifar10", "cifar100"):
        return Augment(crop_padding=4, flip=True)
    if dataset_name == "svhn":
        return Augment(crop_padding=2)
    if dataset_name in ("digits", "mnist"):
        return Augment(crop_padding=1, rotation_degrees=10.0)
    return NO_AUGMENT


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, w)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, dtype=torch.float32) < 0.5  # whatever the default dtype
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_rotation(x: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    angles = (torch.rand(x.shape[0], generator=generator, dtype=torch.float32) * 2 - 1) * math.radians(degrees)
    cos, sin = angles.cos(), angles.sin()
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
