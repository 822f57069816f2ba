"""CIFAR-10 / CIFAR-100 from the "python version" archives (cifar-10-batches-py, cifar-100-python).

The batches are pickles from the official dataset archive (www.cs.toronto.edu/~kriz/cifar.html): dicts of
plain numpy arrays and lists, written by Python 2, hence encoding='bytes'. They are still read with an
unpickler that only resolves the few globals such arrays need, so a planted file cannot run code.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import ArrayDataset
from .registry import DATASETS

CIFAR10 = {"folder": "cifar-10-batches-py", "label_key": b"labels", "classes": 10, "title": "CIFAR-10",
           "splits": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
           "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
CIFAR100 = {"folder": "cifar-100-python", "label_key": b"fine_labels", "classes": 100, "title": "CIFAR-100",
            "splits": {"train": ["train"], "test": ["test"]},
            "mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762)}

# numpy pickles arrays via _reconstruct, whose module numpy 2 renamed; take the function from numpy itself
# rather than importing the deprecated numpy.core path.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 protocol-2 pickles (re-saved batches) store bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ARRAY_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _unpickle(name: str, path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DataError(f"{name}: {path} is not a CIFAR python batch ({exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{name}: {path} is not a CIFAR python batch (holds a {type(batch).__name__}, not a dict)")
    return batch


def _load(name: str, meta: dict, split: str, root) -> ArrayDataset:
    if split not in meta["splits"]:
        raise DataError(f"{name} has splits {', '.join(map(repr, meta['splits']))}, not '{split}'")
    root = Path(root) if root is not None else Path("data") / name
    # torchvision extracts into ROOT/<folder>; also accept ROOT pointing at the folder itself.
    folder = root / meta["folder"]
    if not folder.is_dir() and (root / meta["splits"][split][0]).is_file():
        folder = root
    files = [folder / f for f in meta["splits"][split]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{name}: missing {', '.join(missing)} in {folder}; download the {meta['title']} python "
                        f"version and extract it into {root}, or pass --data-root")
    images, labels = [], []
    for path in files:
        batch = _unpickle(name, path)
        data, batch_labels = batch.get(b"data"), batch.get(meta["label_key"])
        if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
                or data.shape[1] != 3 * 32 * 32 or batch_labels is None):
            raise DataError(f"{name}: {path} lacks a uint8 N x 3072 b'data' array and "
                            f"{meta['label_key']!r} labels")
        batch_labels = np.asarray(batch_labels, dtype=np.int64).reshape(-1)
        if len(batch_labels) != len(data):
            raise DataError(f"{name}: {path} has {len(data)} images but {len(batch_labels)} labels")
        images.append(data)
        labels.append(batch_labels)
    all_labels = np.concatenate(labels)
    if all_labels.size and (all_labels.min() < 0 or all_labels.max() >= meta["classes"]):
        raise DataError(f"{name}: labels outside 0-{meta['classes'] - 1} in {folder}")
    # Each row is the red plane, then green, then blue, each 32x32 row-major: a plain NCHW reshape.
    pixels = np.concatenate(images).reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return ArrayDataset(torch.from_numpy(pixels), torch.from_numpy(all_labels), meta["classes"], name, split,
                        meta["mean"], meta["std"], {"source": str(folder)})


@DATASETS.register("cifar10", "CIFAR-10 32x32 colour images, 10 classes, python version (data/cifar10)")
def load_cifar10(split: str = "train", root=None, **_) -> ArrayDataset:
    return _load("cifar10", CIFAR10, split, root)


@DATASETS.register("cifar100", "CIFAR-100 32x32 colour images, 100 fine classes, python version (data/cifar100)")
def load_cifar100(split: str = "train", root=None, **_) -> ArrayDataset:
    return _load("cifar100", CIFAR100, split, root)
