"""`npz`: the user's arrays — `x` (N×C×H×W or N×H×W×C; uint8 0-255 or float in [0,1]) and `y` (N integer labels).

ROOT is one .npz file, split into train and test by a seeded stratified split (`test_fraction`, `split_seed`), or a
directory holding train.npz and test.npz. An optional `classes` array (text) names the labels; `num_classes`
(option) declares how many there are when a split lacks the last ones. Read with `allow_pickle=False`: an array of
Python objects is refused, never unpickled.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import ArrayDataset
from .registry import DATASETS, check_user_call

OPTIONS = "test_fraction, split_seed, layout, num_classes"  # what load_npz takes, listed in help and errors

LAYOUTS = ("auto", "nchw", "nhwc")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"npz: {path} does not exist; pass --data-root FILE.npz (or a folder with train.npz and "
                        "test.npz)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        raise DataError(f"npz: {path} is not a readable .npz archive of plain arrays ({reason})") from None


def to_pixels(x: np.ndarray, path: Path, layout: str) -> np.ndarray:
    """NCHW float32 in [0,1] from uint8 or float, NCHW or NHWC (auto: channels-last when the last axis is 1 or 3
    and the second is not)."""
    if x.ndim != 4:
        raise DataError(f"npz: {path}: x has shape {x.shape}; expected N×C×H×W or N×H×W×C")
    if layout == "nhwc" or (layout == "auto" and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3)):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise DataError(f"npz: {path}: x has {x.shape[1]} channels (shape {x.shape}); images have 1 or 3 — set "
                        "layout = \"nhwc\" or \"nchw\" if the axes were guessed wrong")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255)
    if x.dtype.kind != "f":
        raise DataError(f"npz: {path}: x is {x.dtype}; use uint8 (0-255) or float pixels in [0, 1]")
    if not np.isfinite(x).all() or (x.size and (x.min() < 0 or x.max() > 1)):
        raise DataError(f"npz: {path}: float x holds values outside [0, 1] (min {np.nanmin(x):g}, max "
                        f"{np.nanmax(x):g}); scale the pixels to [0, 1] or store uint8")
    return np.ascontiguousarray(x, dtype=np.float32)


def to_labels(y: np.ndarray, n: int, path: Path, num_classes: int | None) -> np.ndarray:
    y = np.asarray(y).reshape(-1) if np.asarray(y).ndim == 2 and np.asarray(y).shape[1] == 1 else np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"npz: {path}: y has shape {y.shape} but x holds {n} images; y must be N integer labels")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise DataError(f"npz: {path}: y is {y.dtype}; labels must be integers 0..classes-1")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataError(f"npz: {path}: label {bad} is out of range; labels must be 0..{(num_classes or 1) - 1}")
    return y


@DATASETS.register("npz", "your arrays: ROOT.npz with x (N×C×H×W or N×H×W×C) and y, or ROOT/{train,test}.npz; "
                          f"options: {OPTIONS}")
def load_npz(split: str = "train", root=None, test_fraction: float = 0.2, split_seed: int = 0,
             layout: str = "auto", num_classes: int | None = None, **unknown) -> ArrayDataset:
    check_user_call("npz", split, root, unknown, OPTIONS, "file: pass --data-root FILE.npz")
    if layout not in LAYOUTS:
        raise DataError(f"npz: layout = {layout!r} must be one of {', '.join(LAYOUTS)}")
    root = Path(root)
    files = {s: root / f"{s}.npz" for s in ("train", "test")} if root.is_dir() else {"all": root}
    arrays = {s: read_npz(p) for s, p in files.items()}
    for s, table in arrays.items():
        missing = [k for k in ("x", "y") if k not in table]
        if missing:
            held = ", ".join(table) or "nothing"
            raise DataError(f"npz: {files[s]} lacks array(s) {', '.join(missing)} (holds {held}); save it with "
                            "np.savez(path, x=images, y=labels)")
    pixels = {s: to_pixels(t["x"], files[s], layout) for s, t in arrays.items()}
    labels = {s: to_labels(t["y"], len(pixels[s]), files[s], num_classes) for s, t in arrays.items()}
    if len({p.shape[1:] for p in pixels.values()}) > 1:
        raise DataError(f"npz: train.npz and test.npz in {root} hold images of different shapes "
                        f"({pixels['train'].shape[1:]} and {pixels['test'].shape[1:]})")
    classes = int(num_classes) if num_classes is not None else max(int(y.max()) + 1 for y in labels.values())
    if classes < 2:
        raise DataError(f"npz: {root} has labels of 1 class; a classifier needs at least 2")
    names = arrays[next(iter(arrays))].get("classes")
    names = [str(n) for n in names.reshape(-1)] if names is not None and names.dtype.kind in "US" else None
    if names is not None and len(names) != classes:
        raise DataError(f"npz: {root}: classes names {len(names)} labels but y has {classes} classes")
    info = {"source": str(root.resolve()), **({"classes": names} if names else {})}
    if "all" in arrays:
        from .imagefolder import split_files

        index = [(i, int(label)) for i, label in enumerate(labels["all"])]
        parts = split_files(index, names or [str(c) for c in range(classes)], float(test_fraction),
                            int(split_seed), "npz")
        chosen = {s: np.array([i for i, _ in part], dtype=np.int64) for s, part in parts.items()}
        train_x = pixels["all"][chosen["train"]]
        x, y = pixels["all"][chosen[split]], labels["all"][chosen[split]]
        info.update(test_fraction=float(test_fraction), split_seed=int(split_seed))
    else:
        train_x, x, y = pixels["train"], pixels[split], labels[split]
    mean = tuple(float(m) for m in train_x.mean(axis=(0, 2, 3)))
    std = tuple(max(float(s), 1e-3) for s in train_x.std(axis=(0, 2, 3)))
    return ArrayDataset(torch.from_numpy(x), torch.from_numpy(y), classes, "npz", split, mean, std, info)
