"""Seeded batch iteration over an ArrayDataset (in-memory; no worker processes to keep runs deterministic)."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from .augment import NO_AUGMENT, Augment
from .base import ArrayDataset


def iterate_batches(dataset: ArrayDataset, batch_size: int, *, shuffle: bool = False,
                    generator: torch.Generator | None = None, augment: Augment = NO_AUGMENT,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = len(dataset)
    if shuffle:
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x = dataset.images[idx]
        if augment.active:
            x = augment(x, generator if generator is not None else torch.Generator().manual_seed(start))
        yield x, (None if dataset.labels is None else dataset.labels[idx])


def num_batches(dataset: ArrayDataset, batch_size: int, drop_last: bool = False) -> int:
    n = len(dataset)
    return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)
