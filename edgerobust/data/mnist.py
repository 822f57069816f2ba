"""MNIST from the idx files torchvision downloads (plain or .gz), in ROOT or ROOT/MNIST/raw."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import ArrayDataset
from .registry import DATASETS

MEAN, STD = (0.1307,), (0.3081,)
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
UBYTE = 0x08


def _find(root: Path, filename: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw"):
        for candidate in (folder / filename, folder / (filename + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx array of unsigned bytes: magic 0x0000 08 NDIM, NDIM big-endian int32 sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"mnist: cannot read {path} ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != UBYTE or raw[3] != ndim:
        found = raw[:4].hex() if len(raw) >= 4 else "a truncated header"
        raise DataError(f"mnist: {path} is not an idx file of {ndim}-D unsigned bytes "
                        f"(magic {found}, expected 000008{ndim:02x})")
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", ndim, 4)) if len(raw) >= header else ()
    if len(shape) != ndim or len(raw) - header != int(np.prod(shape)):
        raise DataError(f"mnist: {path} is truncated or padded: header says {shape}, "
                        f"file has {len(raw) - header} data bytes")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


@DATASETS.register("mnist", "MNIST 28x28 handwritten digits from torchvision's idx files (data/mnist)")
def load_mnist(split: str = "train", root=None, **_) -> ArrayDataset:
    if split not in FILES:
        raise DataError(f"mnist has splits {', '.join(map(repr, FILES))}, not '{split}'")
    root = Path(root) if root is not None else Path("data") / "mnist"
    names = FILES[split]
    paths = [_find(root, name) for name in names]
    if None in paths:
        missing = [name + "[.gz]" for name, path in zip(names, paths, strict=True) if path is None]
        raise DataError(f"mnist: missing {', '.join(missing)} in {root} (or {root / 'MNIST' / 'raw'}); "
                        f"download the MNIST idx files there (e.g. torchvision.datasets.MNIST('{root}', "
                        "download=True)), or pass --data-root")
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if len(images) != len(labels):
        raise DataError(f"mnist: {paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"mnist: {paths[1]} has label {labels.max()}; digit labels are 0-9")
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return ArrayDataset(pixels, torch.from_numpy(labels.astype(np.int64)), 10, "mnist", split, MEAN, STD,
                        {"source": str(paths[0].parent)})
