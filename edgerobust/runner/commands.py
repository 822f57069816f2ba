"""The runner's commands on an opened, sealed bundle: verify, bench, replay, smooth (docs/runner-protocol.md).

Each returns the `result` dict of the protocol's envelope; every model figure names its artifact, runtime and machine.
"""
import numpy as np

from . import machine
from .errors import RunnerError
from .runtimes import open_session
from .sealed import check_hashes
from .sets import bundle_sets, choose_set, clean_set, load_npz
from .stats import summarize, throughput, time_calls


def predict(session, x, batch):
    """Float32 logits for every row of `x`, `batch` rows per runtime call."""
    if len(x) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate([session.infer(x[i:i + batch]) for i in range(0, len(x), batch)])


def margins(logits):
    """Top-1 minus top-2 logit per row (0 when a row has one class)."""
    if logits.shape[1] < 2:
        return np.zeros(len(logits))
    top = np.sort(logits.astype(np.float64), axis=1)
    return top[:, -1] - top[:, -2]


def compare(reference, candidate):
    """The host's parity figures (export/parity.py): absolute, relative to max |reference|, top-1 agreement."""
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    scale = float(np.abs(reference).max()) or 1.0
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "max_rel_diff": float(diff.max() / scale),
            "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()), "count": len(reference)}


def golden_array(bundle, key):
    """One of the bundle's golden arrays (inputs, outputs, labels), loaded as data."""
    name = (bundle.manifest.get("golden") or {}).get(key)
    if not name:
        raise RunnerError("bundle_invalid", "the manifest names no golden {}; re-export the bundle".format(key))
    path = bundle.path(name, "golden." + key)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:  # pickled objects are refused, never loaded
        raise RunnerError("bundle_invalid", "{} is not a plain .npy array ({})".format(name, exc)) from None


def _figure(bundle, precision, session, batch):
    return {"artifact": bundle.artifact(precision), "runtime": session.describe(batch),
            "machine": machine.short_machine()}


def verify(bundle, options, precisions=None, golden=True):
    files = check_hashes(bundle)
    result = {"bundle_sha256": bundle.sha256, "files": files, "sha256": "ok", "golden": {}}
    if not golden:
        return result
    names = precisions or sorted((bundle.manifest.get("models") or {}))
    inputs = golden_array(bundle, "inputs").astype(np.float32)
    reference = golden_array(bundle, "outputs").astype(np.float32)
    for precision in names:
        entry = bundle.model_entry(precision)
        allowed = entry.get("runtimes")
        if allowed and options.runtime not in allowed:
            result["golden"][precision] = {"artifact": bundle.artifact(precision), "checked": False,
                                           "reason": "runs on {} only".format(", ".join(allowed))}
            continue
        session = open_session(bundle, precision, options)
        try:
            figures = compare(reference, predict(session, inputs, max(options.max_batch, 1)))
            figures.update(_figure(bundle, precision, session, options.max_batch))
        finally:
            session.close()
        parity = entry.get("parity") or {}
        if "tolerance" in parity:
            kind = parity.get("tolerance_kind", "absolute")
            measured = figures["max_rel_diff"] if kind == "relative" else figures["max_abs_diff"]
            figures.update(tolerance=parity["tolerance"], tolerance_kind=kind, ok=bool(measured <= parity["tolerance"]))
            if not figures["ok"]:
                raise RunnerError("parity_failed", "{} ({}) no longer reproduces the golden outputs on {}: {} "
                                                   "difference {:.3g} > {:g}; re-export or check the device".format(
                                                       entry["file"], precision, options.runtime, kind, measured,
                                                       parity["tolerance"]))
        else:
            figures.update(tolerance=None, ok=None)
        figures["checked"] = True
        result["golden"][precision] = figures
    return result


def bench(bundle, options, precision, batch, warmup, repeats, root, hashes=True):
    if batch < 1 or warmup < 0 or repeats < 1:
        raise RunnerError("usage", "--batch and --repeats must be at least 1 and --warmup at least 0")
    if hashes:
        check_hashes(bundle)
    inputs = golden_array(bundle, "inputs")
    source = np.ascontiguousarray(np.resize(inputs.astype(np.float32), (batch,) + inputs.shape[1:]))
    session = open_session(bundle, precision, options)
    try:
        before = machine.conditions(root)
        prepared = session.prepare(source)
        compute = summarize(time_calls(lambda: session.run(prepared), warmup, repeats))
        end_to_end = summarize(time_calls(lambda: session.infer(source), warmup, repeats))
        after = machine.conditions(root)
        figure = _figure(bundle, precision, session, batch)
    finally:
        session.close()
    compute["throughput_per_s"] = throughput(compute, batch)
    end_to_end["throughput_per_s"] = throughput(end_to_end, batch)
    common = sorted(set(before["thermal"]) & set(after["thermal"]))
    rise = max(after["thermal"][k] - before["thermal"][k] for k in common) if common else None
    figure.update({"warmup": warmup, "repeats": repeats, "batch": batch, "compute": compute,
                   "end_to_end": end_to_end, "before": before, "after": after, "temperature_rise_c": rise})
    return figure


def _set_result(evalset, logits, points):
    predictions = logits.argmax(1) if len(logits) else np.zeros(0, dtype=np.int64)
    correct = predictions == evalset.labels
    out = {"source": evalset.source, "count": int(len(evalset.labels)), "correct": int(correct.sum()),
           "accuracy": float(correct.mean()) if len(correct) else None, "host_robust": None, "agree_with_host": None}
    if evalset.robust is not None:
        out["host_robust"] = int(np.asarray(evalset.robust, dtype=bool).sum())
        out["agree_with_host"] = int((np.asarray(evalset.robust, dtype=bool) == correct).sum())
    if points:
        out["predictions"] = [int(p) for p in predictions]
        out["margins"] = [float(m) for m in margins(logits)]
        out["indices"] = None if evalset.indices is None else [int(i) for i in evalset.indices]
    return out


def replay(bundle, options, precision, batch, set_paths=(), clean=True, points=True, hashes=True):
    if batch < 1:
        raise RunnerError("usage", "--batch must be at least 1")
    if hashes:
        check_hashes(bundle)
    shape = bundle.manifest.get("input_shape")
    sets = ([clean_set(bundle)] if clean else []) + bundle_sets(bundle) + \
        [load_npz(path, path, shape) for path in set_paths]
    session = open_session(bundle, precision, options)
    try:
        figure = _figure(bundle, precision, session, batch)
        figure["sets"] = {s.name: _set_result(s, predict(session, s.x, batch), points) for s in sets}
    finally:
        session.close()
    return figure


def noise_batches(x, sigma, n, batch, seed, row):
    """The smoothing samples of one point, in order, `batch` at a time (the protocol the host reproduces).

    numpy's legacy RandomState: its streams are frozen across numpy versions (Generator's are not promised to be),
    so a Jetson's numpy 1.19 and the host's numpy 2 draw the same noise.
    """
    rng = np.random.RandomState([seed, row])
    base = x.astype(np.float64)[None]
    done = 0
    while done < n:
        size = min(batch, n - done)
        noise = rng.standard_normal((size,) + x.shape)
        yield (base + sigma * noise).astype(np.float32)
        done += size


def smooth(bundle, options, precision, sigma, n, batch, seed, set_spec=None, start=0, count=None,
           margin_below=None, hashes=True):
    if sigma <= 0 or n < 1 or batch < 1 or start < 0 or (count is not None and count < 0):
        raise RunnerError("usage", "--sigma must be > 0, --n and --batch at least 1, --start and --count at least 0")
    if hashes:
        check_hashes(bundle)
    evalset = choose_set(bundle, set_spec)
    stop = len(evalset.x) if count is None else min(len(evalset.x), start + count)
    classes = int(bundle.manifest.get("num_classes") or 0)
    session = open_session(bundle, precision, options)
    results = []
    try:
        for row in range(start, stop):
            votes = np.zeros(classes, dtype=np.int64)
            low, offset = [], 0
            for noisy in noise_batches(evalset.x[row], sigma, n, batch, seed, row):
                logits = session.infer(noisy)
                votes = _add_votes(votes, logits.argmax(1))
                if margin_below is not None:
                    order = np.argsort(-logits.astype(np.float64), axis=1)
                    gap = margins(logits)
                    for i in np.nonzero(gap < margin_below)[0]:
                        low.append([offset + int(i), int(order[i, 0]), int(order[i, 1]), float(gap[i])])
                offset += len(noisy)
            point = {"row": row, "index": None if evalset.indices is None else int(evalset.indices[row]),
                     "label": int(evalset.labels[row]), "counts": [int(c) for c in votes]}
            if margin_below is not None:
                point["low_margin"] = low
            results.append(point)
        figure = _figure(bundle, precision, session, batch)
    finally:
        session.close()
    figure.update({"sigma": sigma, "n": n, "seed": seed, "set": evalset.name, "start": start, "points": results,
                   "noise": "numpy.random.RandomState([seed, row]).standard_normal, float64, added to x, cast to "
                            "float32, no clipping"})
    return figure


def _add_votes(votes, predicted):
    counts = np.bincount(predicted, minlength=len(votes))
    if len(counts) > len(votes):  # num_classes missing from the manifest: grow
        counts[:len(votes)] += votes
        return counts
    return votes + counts
