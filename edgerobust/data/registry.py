"""The dataset registry: name -> loader(split, root, **options) -> ArrayDataset."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from ..registry import Registry
from .base import ArrayDataset

DatasetLoader = Callable[..., ArrayDataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")
DEFAULT_DATA_ROOT = Path("data")


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, **options) -> ArrayDataset:
    """Load dataset `name` (see `DATASETS.names()`); on-disk datasets read from `root` (default ./data/NAME)."""
    loader = DATASETS.get(name)
    try:
        dataset = loader(split=split, root=Path(root) if root is not None else None, **options)
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError, EOFError, OSError) as exc:
        # a damaged file the loader's own checks did not foresee: still one line, never a traceback
        raise DataError(f"{name}: cannot read the {split} split from {root or 'its default folder'} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''})") from None
    if len(dataset) == 0:
        raise DataError(f"{name}: the {split} split holds no images; check the files in {root or 'data/' + name}")
    return dataset
