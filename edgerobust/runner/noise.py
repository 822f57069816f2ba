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


def prefetched(batches, depth=2):
    """The same batches, each drawn on a helper thread while the caller works on the one before."""
    items = []
    ready = threading.Semaphore(0)
    room = threading.Semaphore(depth)
    done = object()

    def fill():
        try:
            for item in batches:
                room.acquire()
                items.append(item)
                ready.release()
        except BaseException as exc:  # handed to the consumer, raised there
            items.append(exc)
            ready.release()
            return
        items.append(done)
        ready.release()

    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    while True:
        ready.acquire()
        item = items.pop(0)
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        room.release()
        yield item
    thread.join()


def fingerprint(x, sigma, seed, row, phase, count=4):
    """sha256 (16 hex digits) of the first `count` noisy samples of a stream: equal on two machines exactly when
    they draw the same numbers."""
    first = next(noise_batches(x, sigma, count, count, seed, row, phase))
    return hashlib.sha256(np.ascontiguousarray(first, dtype="<f4").tobytes()).hexdigest()[:16]
