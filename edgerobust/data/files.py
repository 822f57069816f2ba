"""Images that stay on disk: decoded with Pillow when a batch asks for them, by loader worker threads.

`FileImages` stands where an in-memory NCHW tensor stands in an `ArrayDataset` (`images[idx]` decodes those files
into a float32 tensor in [0,1]; `shape`, `len`), so a dataset of any size is never held in memory whole; only the
batches a command reads are decoded. `iterate_batches` (loader.py) streams it through worker threads, in the same
seeded order as an in-memory dataset, so the batches are identical.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode
FITS = ("resize", "crop")  # resize to H x W (aspect not kept) | shorter side to fit, then the centre H x W


@dataclass(frozen=True)
class Decoder:
    """One image file -> (C, H, W) uint8: converted to C channels and fitted to H x W with antialiasing."""
    shape: tuple[int, int, int]
    fit: str = "resize"

    def __call__(self, path: str | Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        channels, height, width = self.shape
        try:
            with Image.open(path) as image:
                # JPEG: let the decoder scale down by 1/2..1/8 in the DCT (Pillow's draft mode): the resize below
                # then starts from an image at most twice the asked size, decoded at a fraction of the cost
                image.draft(MODES[channels], (width, height) if self.fit == "resize" else _cover(image.size,
                                                                                                  (width, height)))
                image = image.convert(MODES[channels])
                if self.fit == "crop":
                    image = _centre_crop(image, width, height)
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
                array = np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
            reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
            raise DataError(f"{path}: cannot decode this image ({reason}); remove or replace the file") from None
        return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _cover(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The size of `size` scaled so that it covers `box` (what the centre crop starts from)."""
    scale = max(box[0] / size[0], box[1] / size[1])
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _centre_crop(image, width: int, height: int):
    from PIL import Image

    scaled = _cover(image.size, (width, height))
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


class _Batches:
    """What a loader worker serves: a list of indices -> their decoded float32 batch in [0,1], or the error line
    (raised as one DataError by the consumer)."""

    def __init__(self, paths: Sequence[str], decoder: Decoder):
        self.paths, self.decoder = paths, decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, indices: list[int]) -> torch.Tensor | str:
        try:
            pixels = np.stack([self.decoder(self.paths[i]) for i in indices])
        except DataError as exc:
            return str(exc)
        # numpy, not torch, divides: the same correctly rounded float32 x / 255, in the worker, without torch's
        # intra-op thread pool (on busy shared cores its uint8 -> float conversion took longer than the decoding)
        return torch.from_numpy(np.divide(pixels, np.float32(255.0), dtype=np.float32))


class FileImages:
    """An N x C x H x W float32 view of image files in [0,1]; indexing decodes only the files asked for."""

    def __init__(self, paths: Sequence[str | Path], decoder: Decoder, workers: int = 2):
        self.paths = [str(p) for p in paths]
        self.decoder = decoder
        self.workers = int(workers)
        self.dtype = torch.float32
        self.ndim = 4

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), *self.decoder.shape))

    def __len__(self) -> int:
        return len(self.paths)

    def to(self, dtype=None, *args, **kwargs) -> FileImages:
        if dtype not in (None, torch.float32):
            raise TypeError("FileImages are float32 pixels; index them to get a tensor")
        return self

    def contiguous(self) -> FileImages:
        return self

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return self[[index]][0]
        indices = torch.arange(len(self))[index].reshape(-1).tolist()  # slices, index lists and tensors alike
        return next(self.batches([indices], workers=0))

    def numpy(self) -> np.ndarray:
        """Every image decoded (what a caller asking for all of them as one array gets; use slices for less)."""
        return self[:].numpy()

    def batches(self, chunks: Sequence[Sequence[int]], workers: int | None = None) -> Iterator[torch.Tensor]:
        """Float32 batches for each list of indices in `chunks`, in order, decoded by `workers` threads (Pillow
        releases the GIL while it decodes and resizes, so threads decode in parallel without copying batches
        between processes), at most two batches per worker ahead of the consumer."""
        workers = self.workers if workers is None else workers
        chunks = [c.tolist() if isinstance(c, torch.Tensor) else list(map(int, c)) for c in chunks]
        decode = _Batches(self.paths, self.decoder).__getitem__
        if workers <= 0 or len(chunks) <= 1:
            yield from map(_finish, map(decode, chunks))
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="edgerobust-decode") as pool:
            pending: deque = deque()
            for chunk in chunks:
                pending.append(pool.submit(decode, chunk))
                if len(pending) > 2 * workers:
                    yield _finish(pending.popleft().result())
            while pending:
                yield _finish(pending.popleft().result())


def _finish(batch: torch.Tensor | str) -> torch.Tensor:
    if isinstance(batch, str):
        raise DataError(batch)
    return batch
