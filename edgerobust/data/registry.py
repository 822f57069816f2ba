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


def check_user_call(name: str, split: str, root, unknown: dict, valid: str, root_hint: str) -> None:
    """The checks every loader of the user's own files makes first (imagefolder, npz): no unknown option (`valid`
    lists them), a train or test split, and a root (`root_hint` says what to pass)."""
    if unknown:
        raise DataError(f"{name}: unknown option(s) {', '.join(sorted(unknown))}; valid: {valid}")
    if split not in ("train", "test"):
        raise DataError(f"{name} has splits 'train' and 'test', not '{split}'")
    if root is None:
        raise DataError(f"{name} needs its {root_hint} (or [data] root in the recipe)")


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
