"""SVHN cropped digits (train_32x32.mat, test_32x32.mat, extra_32x32.mat) from ufldl.stanford.edu/housenumbers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import ArrayDataset
from .registry import DATASETS

MEAN, STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
SPLITS = ("train", "test", "extra")


@DATASETS.register("svhn", "SVHN 32x32 house-number digits from the cropped-digits .mat files (data/svhn)")
def load_svhn(split: str = "train", root=None, **_) -> ArrayDataset:
    import scipy.io

    if split not in SPLITS:
        raise DataError(f"svhn has splits {', '.join(map(repr, SPLITS))}, not '{split}'")
    root = Path(root) if root is not None else Path("data") / "svhn"
    path = root / f"{split}_32x32.mat"
    if not path.is_file():
        raise DataError(f"svhn: missing {path}; download {path.name} (SVHN format 2, cropped digits) "
                        f"into {root}, or pass --data-root")
    try:
        mat = scipy.io.loadmat(path)
    except (OSError, ValueError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise DataError(f"svhn: cannot read {path} ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        found = "missing X or y" if x is None or y is None else f"X of shape {x.shape}"
        raise DataError(f"svhn: {path} has {found}; expected X of shape (32, 32, 3, N) and y of N labels")
    labels = np.asarray(y).reshape(-1).astype(np.int64)
    if len(labels) != x.shape[3]:
        raise DataError(f"svhn: {path} has {x.shape[3]} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise DataError(f"svhn: {path} has labels outside 1-10")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # HWCN -> NCHW
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0)
    # The .mat files store digit 0 as label 10.
    return ArrayDataset(pixels, torch.from_numpy(labels % 10), 10, "svhn", split, MEAN, STD,
                        {"source": str(path)})
