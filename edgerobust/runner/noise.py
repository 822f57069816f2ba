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


class Ring(object):
    """`count` reusable arrays handed out in turn (`take`), so a stream of batches allocates nothing per batch: an
    array stays valid until `count` more have been taken. A `prefetched` stream of depth d needs d + 2 (d waiting,
    one being drawn, one in the caller's hands): `ring(depth)`."""

    def __init__(self, count):
        self.count, self.turn, self.arrays = count, 0, [None] * count

    def take(self, shape, dtype=np.float32):
        i, self.turn = self.turn, (self.turn + 1) % self.count
        size = int(np.prod(shape))
        array = self.arrays[i]
        if array is None or array.dtype != dtype or array.size < size:
            array = self.arrays[i] = np.empty(size, dtype)
        return array[:size].reshape(shape)


DEPTH = 2  # batches drawn ahead of the caller


def ring(depth=DEPTH):
    """The arrays a consumer of `prefetched(..., depth)` that holds one batch at a time needs."""
    return Ring(depth + 2)


def _out(buffers, shape, dtype=np.float32):
    return np.empty(shape, dtype) if buffers is None else buffers.take(shape, dtype)


def _sizes(n, batch, first=None):
    """The batch sizes of a stream of `n` samples: `batch` each, the last what is left; from `first` (when given)
    doubling up to `batch`."""
    done, size = 0, first or batch
    while done < n:
        yield min(size, n - done)
        done, size = done + size, min(batch, 2 * size)


def noise_batches(x, sigma, n, batch, seed, row, phase=1, buffers=None, first=None):
    """The `n` noisy copies of one point `x` (C,H,W float32), in stream order, `batch` at a time (`first`, when
    given: the first batch that size, each next one twice the last up to `batch`, so a consumer waiting for the
    stream starts sooner). `buffers` (a `Ring`): write into its arrays instead of new ones (each batch is then
    valid only until the ring comes round)."""
    rng = generator(seed, row, phase)
    base = np.asarray(x, dtype=np.float32)[None]
    scale = np.float32(sigma)
    for size in _sizes(n, batch, first):
        noise = _out(buffers, (size,) + base.shape[1:])
        rng.standard_normal(dtype=np.float32, out=noise)  # the same numbers as standard_normal(shape, float32)
        np.multiply(noise, scale, out=noise)
        np.add(noise, base, out=noise)
        yield noise


SOUND_BITS = 60  # one sample of the sound noise: a uniform integer in [0, 2^60), 60 fair coins
BUCKET_BITS = 16  # its first 16 bits pick a bucket; a bucket without a threshold inside settles the bin by itself
LEVELS = 255  # the input grid of the sound noise: 8-bit pixels in [0,1]
SOUND_RULE = ("sound (Voracek & Hein): u = w * 2^44 + l, w = the 16-bit words of PCG64(SeedSequence([seed, row, "
              "phase])).random_raw(), least significant first, one per element in order; l = random_raw() >> 20 of "
              "PCG64(SeedSequence([seed, row, phase], spawn_key=(0,))), in element order, drawn only for the "
              "elements whose bucket [w * 2^44, (w+1) * 2^44) holds a threshold; J = searchsorted(T, u, 'right') - K, "
              "T the rounded Gaussian's CDF at the bin edges x 2^60 (2K values, from the host); "
              "input float32(round(255*x) + J) / 255")


def check_thresholds(thresholds):
    """The sound noise's thresholds as int64: 2K non-decreasing values in [0, 2^60] (None when not)."""
    t = np.asarray(thresholds)
    if t.ndim != 1 or len(t) < 2 or len(t) % 2 or t.dtype.kind not in "iu":
        return None
    t = t.astype(np.int64)
    if t[0] < 0 or t[-1] > 2 ** SOUND_BITS or (np.diff(t) < 0).any():
        return None
    return t


def _index_dtype(largest):
    return np.int16 if largest < 2 ** 15 else np.int32 if largest < 2 ** 31 else np.int64


class SoundDraws(object):
    """The random bits of one sound-noise stream: 16-bit words from the keyed generator (the raw draws' four words,
    least significant first, one word per element, leftovers kept for the next call) and 44-bit low parts from its
    child stream SeedSequence([seed, row, phase], spawn_key=(0,)), taken in element order. Both are consumed in
    order whatever the batch, so chunked draws concatenate to one draw."""

    def __init__(self, seed, row, phase):
        self.words = generator(seed, row, phase).bit_generator
        self.lows = np.random.PCG64(np.random.SeedSequence([int(seed), int(row), int(phase)], spawn_key=(0,)))
        self.left = np.empty(0, "<u2")

    def take_words(self, size):
        need = size - len(self.left)
        if need <= 0:
            out, self.left = self.left[:size], self.left[size:].copy()
            return out
        raw = self.words.random_raw(-(-need // 4)).astype("<u8", copy=False).view("<u2")  # portable word order
        words = np.concatenate([self.left, raw]) if len(self.left) else raw
        self.left = words[size:].copy()
        return words[:size]

    def take_lows(self, count):
        return (self.lows.random_raw(count) >> np.uint64(64 - (SOUND_BITS - BUCKET_BITS))).view(np.int64)


def sound_bins(draws, thresholds, shape, table=None):
    """Bin indices 0..2K (noise integer + K) from `draws` (a `SoundDraws`): P(b) = (T_b - T_{b-1}) / 2^60 exactly.
    `table` is `bucket_table(thresholds)`, computed once per stream.

    The 60-bit uniform u is drawn lazily: its top 16 bits w first (a quarter of a raw draw), its low 44 bits l only
    where they matter, i.e. where the bucket [w * 2^44, (w+1) * 2^44) holds a threshold (0.7% of the mass at
    sigma = 0.25). Every other bucket lies between two thresholds, so every u in it has the same bin whatever l
    would be. The l come from a stream independent of the w's, so u = w * 2^44 + l is uniform on [0, 2^60) exactly
    as one 60-bit draw and the bins have exactly the distribution above; a quarter of the random bits and one
    table lookup per element."""
    first = bucket_table(thresholds) if table is None else table
    size = int(np.prod(shape))
    words = draws.take_words(size)
    bins = first.take(words, mode="clip")  # words index 0..2^16 - 1, all in range
    settle = np.flatnonzero(bins < 0)
    if len(settle):
        u = (words[settle].astype(np.int64) << (SOUND_BITS - BUCKET_BITS)) | draws.take_lows(len(settle))
        bins[settle] = np.searchsorted(thresholds, u, side="right")
    return bins.reshape(shape)


def bucket_table(thresholds):
    """Each bucket's bin (the number of thresholds <= its start), or -1 where a threshold lies inside it; int16 when
    the bins fit (the table is read at random: 128 KiB stays in cache where int64's 512 KiB does not)."""
    starts = np.arange(2 ** BUCKET_BITS, dtype=np.int64) << (SOUND_BITS - BUCKET_BITS)
    first = np.searchsorted(thresholds, starts, side="right")
    last = np.searchsorted(thresholds, starts + (1 << (SOUND_BITS - BUCKET_BITS)) - 1, side="right")
    return np.where(last != first, -1, first).astype(_index_dtype(len(thresholds) + 1))


def sound_batches(x, thresholds, n, batch, seed, row, phase=1, buffers=None, first=None):
    """The `n` noisy copies of point `x` under the sound noise, `batch` at a time: float32(round(255 x) + J) / 255,
    read from a table of those values for the point's range of integers (the same floats, one gather per element).
    `buffers`, `first`: as for `noise_batches`."""
    draws = SoundDraws(seed, row, phase)
    table = bucket_table(thresholds)
    half = len(thresholds) // 2
    a = np.rint(np.asarray(x, dtype=np.float64) * LEVELS).astype(np.int64)
    lowest = int(a.min()) - half if a.size else 0
    values = (np.arange(lowest, int(a.max()) + half + 1 if a.size else 1).astype(np.float32)
              / np.float32(LEVELS))  # values[i] = float32(lowest + i) / 255
    index = _index_dtype(len(values))
    shift = (a - lowest - half).astype(index)  # bin + shift = a + J - lowest
    if table.dtype != index:
        table = table.astype(index)
    for size in _sizes(n, batch, first):
        bins = sound_bins(draws, thresholds, (size,) + a.shape, table)
        bins += shift
        noisy = _out(buffers, bins.shape)
        np.take(values, bins, out=noisy, mode="clip")  # bins index 0..len(values) - 1, all in range
        yield noisy


class Prefetched(object):
    """`batches` drawn on a helper thread, up to `depth` ahead of the caller, from the moment this is made (so a
    caller can start drawing before it opens its runtime session); `close()` stops the helper early.

    The hand-over is `depth` slots, each with two plain locks used as binary semaphores ("full", "free"): C-level
    locks cost well under a microsecond and release the GIL while they wait, where threading.Semaphore and
    queue.Queue (pure Python over a Condition) cost 10-25 us per batch, a few percent of a small model's batch."""

    POLL = 0.05  # seconds a helper waiting for a free slot sleeps between looks at `close()`

    def __init__(self, batches, depth=DEPTH):
        self._slots = [None] * depth
        self._full = [threading.Lock() for _ in range(depth)]
        self._free = [threading.Lock() for _ in range(depth)]
        for lock in self._full:
            lock.acquire()  # nothing to take yet
        self._turn = 0
        self._stop = False
        self._done = object()
        self._thread = threading.Thread(target=self._fill, args=(batches,), daemon=True)
        self._thread.start()

    def _put(self, k, item):
        while not self._free[k].acquire(True, self.POLL):
            if self._stop:
                return False
        if self._stop:
            return False
        self._slots[k] = item
        self._full[k].release()
        return True

    def _fill(self, batches):
        k = 0
        try:
            for item in batches:
                if not self._put(k, item):
                    return
                k = (k + 1) % len(self._slots)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(k, exc)
            return
        self._put(k, self._done)

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop:
            raise StopIteration
        k = self._turn
        self._full[k].acquire()
        item, self._slots[k] = self._slots[k], None
        self._turn = (k + 1) % len(self._slots)
        if item is self._done:
            self._thread.join()
            self._stop = True
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        self._free[k].release()
        return item

    next = __next__  # Python 2 spelling, harmless

    def close(self):
        """Stop drawing: the helper ends at its next batch (it may finish the one it is drawing)."""
        if not self._stop:
            self._stop = True
            self._thread.join()


def prefetched(batches, depth=DEPTH):
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
