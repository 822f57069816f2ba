"""Write a small image folder to try the recipe on: images/<class>/*.png|jpg, three classes of shapes (discs,
squares, stripes) in random colours, positions and sizes, 64x64 pixels. Your own folder replaces it.

Run: python make_images.py [--per-class 40] [--out images]
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("disc", "square", "stripes")


def draw(kind: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.integers(16, size - 16, 2)
    radius = rng.integers(8, 15)
    if kind == "disc":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    elif kind == "square":
        mask = (abs(yy - cy) < radius) & (abs(xx - cx) < radius)
    else:
        mask = ((xx + yy * rng.choice([-1, 1])) // rng.integers(4, 8)) % 2 == 0
    background, colour = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    pixels = np.where(mask[..., None], colour, background) + rng.normal(0, 12, (size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_folder(out: Path, per_class: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (out / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(draw(kind, rng)).save(out / kind / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("images"))
    args = parser.parse_args()
    print(f"wrote {write_folder(args.out, args.per_class)}")
