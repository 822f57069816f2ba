"""`imagefolder`: the user's own images, one sub-directory per class (PNG, JPEG, BMP), read with Pillow.

ROOT/<class>/*.png is split into train and test by a seeded stratified split (`test_fraction`, `split_seed`);
ROOT/train/<class>/ and ROOT/test/<class>/ are taken as given. Class names are the sub-directories' names, sorted
(label i = the i-th name), and are recorded in the run (`info.classes`). Every image is converted to the declared
`shape` = [C, H, W] (C = 1 greyscale or 3 RGB) by resizing (`fit = "resize"`) or by scaling its shorter side and
cutting out the centre (`fit = "crop"`); without a declared shape all images must share one size. A folder larger
than `max_memory` bytes of decoded pixels (or `stream = true`) stays on disk and is decoded batch by batch by
`workers` loader threads (files.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import ArrayDataset
from .files import FITS, Decoder, FileImages
from .registry import DATASETS, check_user_call

OPTIONS = "shape, fit, test_fraction, split_seed, workers, stream, max_memory"  # what load_imagefolder takes

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
STATS_SAMPLE = 256  # training images that give the normalisation mean/std (seeded sample)
MAX_MEMORY = 512 * 2**20  # decoded bytes up to which a split is held in memory


def class_files(folder: Path) -> dict[str, list[Path]]:
    """Sorted class name -> sorted image files under folder/<class>/ (hidden entries skipped)."""
    try:
        with os.scandir(folder) as listing:
            entries = [e for e in listing if e.is_dir() and not e.name.startswith(".")]
    except OSError as exc:
        raise DataError(f"imagefolder: cannot read {folder} ({exc.strerror or exc})") from None
    classes = {}
    for entry in sorted(entries, key=lambda e: e.name):
        files = []
        for parent, dirs, names in os.walk(entry.path, onerror=_walk_error):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [Path(parent) / n for n in sorted(names)
                      if not n.startswith(".") and n.lower().endswith(EXTENSIONS)]
        if not files:
            raise DataError(f"imagefolder: class folder {entry.path} holds no PNG, JPEG or BMP image; add images "
                            "or remove the folder")
        classes[entry.name] = files
    return classes


def _walk_error(exc: OSError) -> None:
    raise DataError(f"imagefolder: cannot read {exc.filename} ({exc.strerror or exc})")


def scan(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]] | None, list[tuple[Path, int]]]:
    """(class names, given splits or None, every (file, label)); every error names the folder."""
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a directory; pass --data-root DIR with one sub-directory "
                        "per class (or train/ and test/ holding them)")
    given = (root / "train").is_dir() and (root / "test").is_dir()
    splits = {s: class_files(root / s) for s in ("train", "test")} if given else {"all": class_files(root)}
    names = sorted(next(iter(splits.values())))
    if len(names) < 2:
        where = root / "train" if given else root
        raise DataError(f"imagefolder: {where} has {len(names)} class folder(s); a classifier needs at least 2 "
                        "(one sub-directory of images per class)")
    if given:
        extra = sorted(set(splits["test"]) - set(names))
        if extra:
            raise DataError(f"imagefolder: {root / 'test'} has class folder(s) {', '.join(extra)} that "
                            f"{root / 'train'} lacks; the two must name the same classes")
    labelled = {s: [(f, names.index(c)) for c in sorted(table) for f in table[c]] for s, table in splits.items()}
    everything = [item for items in labelled.values() for item in items]
    return names, (labelled if given else None), everything


def infer_shape(files: list[tuple[Path, int]], declared: bool) -> tuple[int, int, int] | None:
    """Every file's header read (so a file Pillow cannot identify fails before any work, naming it); unless a shape
    is `declared`, the one size (and greyscale or colour) all images share."""
    from PIL import Image, UnidentifiedImageError

    first: tuple[Path, tuple[int, int]] | None = None
    grey = True
    for path, _ in files:
        try:
            with Image.open(path) as image:
                size, mode = image.size, image.mode
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
            reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
            raise DataError(f"{path}: cannot read this image ({reason}); remove or replace the file") from None
        grey = grey and mode in GREY_MODES
        if first is None:
            first = (path, size)
        elif size != first[1] and not declared:
            raise DataError(f"imagefolder: {path} is {size[0]}x{size[1]} but {first[0]} is {first[1][0]}x"
                            f"{first[1][1]}; declare the input shape ([data] options shape = [3, H, W]) to resize "
                            "them all")
    if declared or first is None:
        return None
    return (1 if grey else 3, first[1][1], first[1][0])


def check_shape(shape: Any) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise DataError(f"imagefolder: shape {shape!r} must be [C, H, W] with C = 1 (greyscale) or 3 (RGB) and "
                        "positive H, W")
    return shape  # type: ignore[return-value]


def split_files(files: list[tuple[Any, int]], names: list[str], test_fraction: float, seed: int,
                kind: str = "imagefolder") -> dict[str, list[tuple[Any, int]]]:
    """A seeded stratified split (scikit-learn): each class keeps its share in both halves."""
    from sklearn.model_selection import train_test_split

    labels = np.array([label for _, label in files])
    counts = np.bincount(labels, minlength=len(names))
    if counts.min() < 2:
        raise DataError(f"{kind}: class '{names[int(counts.argmin())]}' has {int(counts.min())} image; a "
                        "stratified train/test split needs at least 2 per class")
    try:
        train, test = train_test_split(np.arange(len(files)), test_size=test_fraction, random_state=seed,
                                       stratify=labels)
    except ValueError as exc:
        raise DataError(f"{kind}: cannot split {len(files)} images of {len(names)} classes with "
                        f"test_fraction = {test_fraction} ({exc}); change test_fraction or add images") from None
    return {"train": [files[i] for i in sorted(train)], "test": [files[i] for i in sorted(test)]}


def fitted_images(files: list[tuple[Path, int]], decoder: Decoder, workers: int, stream: bool | str,
                  max_memory: int) -> FileImages | torch.Tensor:
    images = FileImages([f for f, _ in files], decoder, workers)
    size = len(files) * int(np.prod(decoder.shape)) * 4
    if stream is True or (stream == "auto" and size > max_memory):
        return images
    chunk = 256
    return torch.cat(list(images.batches([range(s, min(s + chunk, len(files))) for s in range(0, len(files),
                                                                                             chunk)])))


@DATASETS.register("imagefolder", "your images: ROOT/<class>/*.png|jpg|bmp (or ROOT/train, ROOT/test); options: "
                                  f"{OPTIONS}")
def load_imagefolder(split: str = "train", root=None, shape=None, fit: str = "resize", test_fraction: float = 0.2,
                     split_seed: int = 0, workers: int = 2, stream: bool | str = "auto",
                     max_memory: int = MAX_MEMORY, **unknown) -> ArrayDataset:
    check_user_call("imagefolder", split, root, unknown, OPTIONS, "folder: pass --data-root DIR")
    if fit not in FITS:
        raise DataError(f"imagefolder: fit = {fit!r} must be one of {', '.join(FITS)}")
    if not 0 < float(test_fraction) < 1:
        raise DataError(f"imagefolder: test_fraction = {test_fraction} must be between 0 and 1")
    if stream not in (True, False, "auto") or int(workers) < 0:
        raise DataError(f"imagefolder: stream = {stream!r} must be true, false or \"auto\" and workers ≥ 0")
    root = Path(root)
    names, given, everything = scan(root)
    declared = check_shape(shape) if shape is not None else None
    shape = declared or infer_shape(everything, declared=False)
    if declared:
        infer_shape(everything, declared=True)
    parts = given or split_files(everything, names, float(test_fraction), int(split_seed))
    decoder = Decoder(shape, fit)
    files = parts[split]
    if not files:
        raise DataError(f"imagefolder: the {split} split of {root} holds no images")
    train = parts["train"]
    sample = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:STATS_SAMPLE]
    stats = FileImages([train[i][0] for i in sample.sort().values.tolist()], decoder, workers)[:]
    mean = tuple(stats.mean(dim=(0, 2, 3)).tolist())
    std = tuple(stats.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()) if len(stats) > 1 else (1.0,) * shape[0]
    images = fitted_images(files, decoder, int(workers), stream, int(max_memory))
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    info = {"source": str(root.resolve()), "classes": names, "fit": fit, "streamed": isinstance(images, FileImages),
            "layout": "train/ and test/ folders" if given else "one folder, seeded stratified split"}
    if not given:
        info.update(test_fraction=float(test_fraction), split_seed=int(split_seed))
    return ArrayDataset(images, labels, len(names), "imagefolder", split, mean, std, info)  # type: ignore[arg-type]
