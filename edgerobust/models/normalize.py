"""Input normalisation as the model's first layer, so the rest of the toolkit speaks [0,1] pixels."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class NormalizedClassifier(nn.Sequential):
    """`normalize` then `net`; indexable like any nn.Sequential, exported as one graph. A fixed first layer `pca`
    (models/pca.py, Song's linear decomposition) comes before `normalize` when given: it works in pixel space."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], pca: nn.Module | None = None):
        first = OrderedDict(pca=pca) if pca is not None else OrderedDict()
        super().__init__(OrderedDict(**first, normalize=Normalize(mean, std), net=net))
