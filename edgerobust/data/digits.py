"""scikit-learn's bundled 8x8 digits: real data that needs no download (the built-in default)."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from .base import ArrayDataset
from .registry import DATASETS

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@DATASETS.register("digits", "scikit-learn 8x8 digits, 1797 images, 10 classes (built in)")
def load_digits(split: str = "train", root=None, **_) -> ArrayDataset:
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise DataError(f"digits has splits 'train' and 'test', not '{split}'")
    bunch = sk_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # values 0..16 -> [0, 1]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    train_images = images[train_idx]
    mean = (float(train_images.mean()),)
    std = (float(train_images.std()),)
    idx = train_idx if split == "train" else test_idx
    return ArrayDataset(torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]), 10, "digits", split,
                        mean, std, {"source": "sklearn.datasets.load_digits", "split_seed": SPLIT_SEED})
