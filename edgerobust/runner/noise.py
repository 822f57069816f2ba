"""Randomized-smoothing noise (Cohen et al. 2019): the one definition the device runner and the host both draw from.

Every stream is keyed by (seed, point row, phase), so the selection samples (phase 0, n0 of them) and the
estimation samples (phase 1, n) of CERTIFY are independent, and no two points or phases share a stream:

    rng = numpy.random.Generator(numpy.random.PCG64(numpy.random.SeedSequence([seed, row, phase])))
    noise = rng.standard_normal((b,) + x.shape, dtype=float32)        # chunks of b concatenate to one draw
    batch = x[None] + float32(sigma) * noise                           # float32, no clipping to [0, 1]

numpy's Generator (numpy >= 1.17, so JetPack's 1.19 has it) draws float32 normals directly (ziggurat), several
times faster than the legacy float64 MT19937 stream, and `prefetched` draws the next batch on a second thread while
the runtime computes (numpy releases the GIL while it fills an array), so drawing is not the bottleneck. NEP 19 does
not freeze Generator streams across numpy versions; `fingerprint` lets the host check that the device drew the
host's numbers before it compares votes sample by sample.
"""
import hashlib
import threading

import numpy as np

PHASES = {"select": 0, "estimate": 1, "predict": 2}
RULE = ("numpy.random.Generator(PCG64(SeedSequence([seed, row, phase]))).standard_normal(dtype=float32), "
        "phase 0 = selection (n0), 1 = estimation (n), 2 = PREDICT; x + float32(sigma) * noise in float32, no clipping")


def generator(seed, row, phase):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(row), int(phase)])))


def noise_batches(x, sigma, n, batch, seed, row, phase=1):
    """The `n` noisy copies of one point `x` (C,H,W float32), in stream order, `batch` at a time."""
    rng = generator(seed, row, phase)
    base = np.asarray(x, dtype=np.float32)[None]
    scale = np.float32(sigma)
    done = 0
    while done < n:
        size = min(batch, n - done)
        noise = rng.standard_normal((size,) + base.shape[1:], dtype=np.float32)
        noise *= scale
        noise += base
        yield noise
        done += size


SOUND_BITS = 60  # one sample of the sound noise: a uniform integer in [0, 2^60), 60 fair coins
BUCKET_BITS = 16  # its lookup table: 2^16 buckets of the draws (a binary search per element is 3x slower)
LEVELS = 255  # the input grid of the sound noise: 8-bit pixels in [0,1]
SOUND_RULE = ("sound (Voracek & Hein): J = searchsorted(T, Generator(PCG64(SeedSequence([seed, row, phase])))"
              ".bit_generator.random_raw() >> 4, 'right') - K, T the rounded Gaussian's CDF at the bin edges x 2^60 "
              "(2K values, from the host); input float32(round(255*x) + J) / 255")


def check_thresholds(thresholds):
    """The sound noise's thresholds as int64: 2K non-decreasing values in [0, 2^60] (None when not)."""
    t = np.asarray(thresholds)
    if t.ndim != 1 or len(t) < 2 or len(t) % 2 or t.dtype.kind not in "iu":
        return None
    t = t.astype(np.int64)
    if t[0] < 0 or t[-1] > 2 ** SOUND_BITS or (np.diff(t) < 0).any():
        return None
    return t


def sound_bins(rng, thresholds, shape, table=None):
    """Bin indices 0..2K (noise integer + K), int64: P(b) = (T_b - T_{b-1}) / 2^60 exactly. `table` is
    `bucket_table(thresholds)`, computed once per stream."""
    first, padded = table or bucket_table(thresholds)
    size = int(np.prod(shape))
    u = rng.bit_generator.random_raw(size)  # uint64, uniform
    u >>= np.uint64(64 - SOUND_BITS)
    u = u.view(np.int64).reshape(shape)
    bins = first.take(u >> (SOUND_BITS - BUCKET_BITS))
    bins += u >= padded.take(bins)  # at most one threshold inside the bucket
    hard = bins < 0
    if hard.any():  # several thresholds in the bucket (far tails, marked -1): a binary search settles those draws
        bins[hard] = np.searchsorted(thresholds, u[hard], side="right")
    return bins


def bucket_table(thresholds):
    """Each bucket's first bin (-1 where the bucket holds several thresholds) and the thresholds padded with one past
    the end (what index -1 reads, so a marked draw stays negative until its binary search)."""
    starts = np.arange(2 ** BUCKET_BITS, dtype=np.int64) << (SOUND_BITS - BUCKET_BITS)
    first = np.searchsorted(thresholds, starts, side="right")
    last = np.searchsorted(thresholds, starts + (1 << (SOUND_BITS - BUCKET_BITS)) - 1, side="right")
    padded = np.concatenate([thresholds, [np.iinfo(np.int64).max]])
    return np.where(last - first > 1, -1, first).astype(np.int64), padded


def sound_batches(x, thresholds, n, batch, seed, row, phase=1):
    """The `n` noisy copies of point `x` under the sound noise, `batch` at a time: float32(round(255 x) + J) / 255."""
    rng = generator(seed, row, phase)
    table = bucket_table(thresholds)
    a = np.rint(np.asarray(x, dtype=np.float64) * LEVELS).astype(np.int64) - len(thresholds) // 2
    done = 0
    while done < n:
        size = min(batch, n - done)
        j = sound_bins(rng, thresholds, (size,) + a.shape, table)
        j += a
        noisy = j.astype(np.float32)
        noisy /= np.float32(LEVELS)
        yield noisy
        done += size


class Prefetched(object):
    """`batches` drawn on a helper thread, up to `depth` ahead of the caller, from the moment this is made (so a
    caller can start drawing before it opens its runtime session); `close()` stops the helper early."""

    def __init__(self, batches, depth=2):
        self._items = []
        self._ready = threading.Semaphore(0)
        self._room = threading.Semaphore(depth)
        self._stop = False
        self._done = object()
        self._thread = threading.Thread(target=self._fill, args=(batches,), daemon=True)
        self._thread.start()

    def _fill(self, batches):
        try:
            for item in batches:
                self._room.acquire()
                if self._stop:
                    return
                self._items.append(item)
                self._ready.release()
        except BaseException as exc:  # handed to the consumer, raised there
            self._items.append(exc)
            self._ready.release()
            return
        self._items.append(self._done)
        self._ready.release()

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop:
            raise StopIteration
        self._ready.acquire()
        item = self._items.pop(0)
        if item is self._done:
            self._thread.join()
            self._stop = True
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        self._room.release()
        return item

    next = __next__  # Python 2 spelling, harmless

    def close(self):
        """Stop drawing: the helper ends at its next batch (it may finish the one it is drawing)."""
        if not self._stop:
            self._stop = True
            self._room.release()  # a helper waiting for room wakes, sees the stop and ends
            self._thread.join()


def prefetched(batches, depth=2):
    """The same batches, each drawn on a helper thread while the caller works on the one before (`Prefetched`)."""
    return Prefetched(batches, depth)


def fingerprint(x, sigma, seed, row, phase, count=4, thresholds=None):
    """sha256 (16 hex digits) of the first `count` noisy samples of a stream (the sound noise's with `thresholds`):
    equal on two machines exactly when they draw the same numbers."""
    if thresholds is not None:
        first = next(sound_batches(x, thresholds, count, count, seed, row, phase))
    else:
        first = next(noise_batches(x, sigma, count, count, seed, row, phase))
    return hashlib.sha256(np.ascontiguousarray(first, dtype="<f4").tobytes()).hexdigest()[:16]
