"""The dataset registry: name -> loader(split, root, **options) -> ArrayDataset."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..registry import Registry
from .base import ArrayDataset

DatasetLoader = Callable[..., ArrayDataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")
DEFAULT_DATA_ROOT = Path("data")


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, **options) -> ArrayDataset:
    """Load dataset `name` (see `DATASETS.names()`); on-disk datasets read from `root` (default ./data/NAME)."""
    loader = DATASETS.get(name)
    return loader(split=split, root=Path(root) if root is not None else None, **options)
