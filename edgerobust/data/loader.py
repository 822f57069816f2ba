"""Seeded batch iteration over an ArrayDataset: in memory, or streamed from image files by loader workers (files.py)
in the same order, so both give the same batches."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from .augment import NO_AUGMENT, Augment
from .base import ArrayDataset
from .files import FileImages


def iterate_batches(dataset: ArrayDataset, batch_size: int, *, shuffle: bool = False,
                    generator: torch.Generator | None = None, augment: Augment = NO_AUGMENT,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = len(dataset)
    if shuffle:
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    starts = range(0, stop, batch_size)
    if isinstance(dataset.images, FileImages):
        images = dataset.images.batches([order[s:s + batch_size] for s in starts])
    else:
        images = (dataset.images[order[s:s + batch_size]] for s in starts)
    for start, x in zip(starts, images, strict=True):
        idx = order[start:start + batch_size]
        if augment.active:
            x = augment(x, generator if generator is not None else torch.Generator().manual_seed(start))
        yield x, (None if dataset.labels is None else dataset.labels[idx])


def num_batches(dataset: ArrayDataset, batch_size: int, drop_last: bool = False) -> int:
    n = len(dataset)
    return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)
