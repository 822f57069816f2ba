"""Reading an image folder as training reads it, against raw Pillow decoding of the same files, in one run.

`imagefolder` streams the files (data/files.py): loader worker threads read, decode, convert and resize each
batch to the declared input shape and make it float32; the consumer receives the batches in order. The reference is
what a user's own loop would do at least: open and fully decode every file with Pillow in one process, no resize,
no tensor. Figures (images per second, best of the rounds, alternating): ours with 2 workers, ours in-process
(0 workers), raw Pillow; the ratio ours(2 worker threads) / raw per file format. Target: at least 0.9 with workers on
2 cores.
Run: python -m benchmarks.imagefolder_read [--images 1500] [--size 256] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import save_result
from edgerobust.data import FileImages, iterate_batches, load_dataset

SHAPE = [3, 64, 64]
BATCH = 64


def write_folder(root: Path, images: int, size: int, fmt: str) -> list[Path]:
    """Photo-like smooth images with noise (so codecs work as on real photos), two classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(images):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        phase = rng.random(3) * 6
        base = np.stack([np.sin(6 * xx + phase[c]) * np.cos(4 * yy - phase[c]) for c in range(3)], -1)
        pixels = np.clip(127 + 100 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.{fmt}"
        Image.fromarray(pixels).save(path, **({"quality": 90} if fmt == "jpg" else {}))
        paths.append(path)
    return paths


def raw_pillow(paths: list[Path]) -> float:
    from PIL import Image

    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.convert("RGB")  # forces the full decode
    return len(paths) / (time.perf_counter() - start)


def ours(root: Path, workers: int) -> float:
    data = load_dataset("imagefolder", "train", root, shape=SHAPE, stream=True, workers=workers, test_fraction=0.1)
    assert isinstance(data.images, FileImages)
    start = time.perf_counter()
    seen = sum(len(y) for _, y in iterate_batches(data, BATCH, shuffle=True, generator=torch.Generator()))
    return seen / (time.perf_counter() - start)


def measure(fmt: str, images: int, size: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / fmt
        paths = write_folder(root, images, size, fmt)
        train = load_dataset("imagefolder", "train", root, shape=SHAPE, stream=True, test_fraction=0.1)
        train_paths = [Path(p) for p in train.images.paths]  # the same files both ways
        best = {"ours_2_workers": 0.0, "ours_in_process": 0.0, "raw_pillow": 0.0}
        for _ in range(rounds):  # alternating, best of the rounds: the least disturbed by other load
            best["raw_pillow"] = max(best["raw_pillow"], raw_pillow(train_paths))
            best["ours_2_workers"] = max(best["ours_2_workers"], ours(root, 2))
            best["ours_in_process"] = max(best["ours_in_process"], ours(root, 0))
        del paths
    ratio = best["ours_2_workers"] / best["raw_pillow"]
    print(f"{fmt}: ours (2 workers) {best['ours_2_workers']:.0f} img/s, in-process {best['ours_in_process']:.0f}, "
          f"raw Pillow {best['raw_pillow']:.0f}; ratio {ratio:.2f}")
    return {"format": fmt, "images": len(train_paths), "size": size, "images_per_second": best, "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = [measure(fmt, args.images, args.size, args.rounds) for fmt in ("jpg", "png")]
    save_result("imagefolder_read", {
        "shape": SHAPE, "batch": BATCH, "rows": rows, "target": 0.9,
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "met": all(r["ratio"] >= 0.9 for r in rows),
        "note": "ours: read + decode + convert + resize to the shape + float32 batches, 2 loader workers (JPEG "
                "decoded in Pillow's draft mode, scaled in the DCT); raw: Image.open + convert('RGB') per file, "
                "one process, no resize. Batches become float32 in the workers with numpy (torch's uint8 -> float "
                "conversion went through its intra-op thread pool, which on busy cores cost more than the decoding). "
                "Shared 2-core machine: best of alternating rounds; with the cores busy (load average above 2) the "
                "two worker threads have no second core to use.",
    })


if __name__ == "__main__":
    main()
