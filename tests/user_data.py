"""Datasets as a user has them, written by the tests: an image folder per class and .npz arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("cat", "dog", "owl")


def image_folder(root: Path, per_class: int = 10, size=(12, 12), classes=CLASSES, formats=("png", "bmp", "jpg"),
                 seed: int = 0, grey: bool = False) -> Path:
    """ROOT/<class>/<i>.<fmt>: each class a distinct mean colour plus noise (learnable), files in rotating formats."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            width, height = size if not callable(size) else size(i)
            shape = (height, width) if grey else (height, width, 3)
            pixels = np.clip(rng.normal(40 + 170 * c / max(len(classes) - 1, 1), 20, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.{formats[i % len(formats)]}")
    return root
