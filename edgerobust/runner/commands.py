"""The runner's commands on an opened, sealed bundle: verify, bench, replay, smooth, logits (docs/runner-protocol.md).

Each returns the `result` dict of the protocol's envelope; every model figure names its artifact, runtime and machine.
"""
import collections

import numpy as np

from . import machine
from .errors import RunnerError
from .noise import (
    DEPTH,
    PHASES,
    RULE,
    SOUND_RULE,
    check_thresholds,
    fingerprint,
    noise_batches,
    prefetched,
    ring,
    sound_batches,
)
from .parity import agreement, compare, within_tolerance
from .precisions import PRECISIONS
from .runtimes import open_session
from .sealed import check_hashes
from .sets import bundle_sets, choose_set, clean_set, load_npz
from .stats import summarize, throughput, time_calls
from .tolerance import compare_with_tolerance


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


def golden_array(bundle, key):
    """One of the bundle's golden arrays (inputs, outputs, labels), loaded as data."""
    golden = bundle.manifest.get("golden") or {}
    name = golden.get(key) if isinstance(golden, dict) else None
    if not name or not isinstance(name, str):
        raise RunnerError("bundle_invalid", "the manifest names no golden {} file (golden.{} must be a file name); "
                                            "re-export the bundle".format(key, key))
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
    golden_outputs = golden_array(bundle, "outputs")
    reference = golden_outputs.astype(np.float32)
    for precision in names:
        entry = bundle.model_entry(precision)
        allowed = entry.get("runtimes")
        if allowed and options.runtime not in allowed:
            result["golden"][precision] = {"artifact": bundle.artifact(precision), "checked": False,
                                           "reason": "runs on {} only".format(", ".join(allowed))}
            continue
        session = open_session(bundle, precision, options)
        try:
            outputs = predict(session, inputs, max(options.max_batch, 1))
            figures = compare(reference, outputs)
            figures.update(_figure(bundle, precision, session, options.max_batch))
        finally:
            session.close()
        if "golden_tolerance" in entry:
            figures.update(_check_derived(bundle, precision, entry, golden_outputs, outputs, options.runtime))
        elif PRECISIONS[precision].parity == "agreement" and "min_top1_agreement" in (entry.get("parity") or {}):
            figures.update(_check_agreement(bundle, precision, entry, reference, outputs, options.runtime))
        else:
            figures.update(_check_parity(precision, entry, figures, options.runtime))
        figures["checked"] = True
        result["golden"][precision] = figures
    return result


def _check_derived(bundle, precision, entry, reference, outputs, runtime):
    """The bundle's derived per-logit tolerance (runner/tolerance.py); `file: null` means finiteness only."""
    info = entry["golden_tolerance"]
    where = "models.{}.golden_tolerance".format(precision)
    if not isinstance(info, dict) or "file" not in info:
        raise RunnerError("bundle_invalid", "{} has no `file` entry; re-export the bundle".format(where))
    bound = None
    if info["file"] is not None:
        path = bundle.path(info["file"], where + ".file")
        try:
            bound = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RunnerError("bundle_invalid", "{} is not a plain .npy array ({})".format(info["file"], exc)) from None
        if bound.dtype.kind != "f" or bound.shape != reference.shape:
            raise RunnerError("bundle_invalid", "{} ({}) holds {} {}, not the golden outputs' float shape {}; "
                                                "re-export the bundle".format(where, info["file"], bound.dtype,
                                                                              bound.shape, reference.shape))
    got = compare_with_tolerance(outputs, reference, bound)
    figures = {"tolerance": got.get("max_bound"), "tolerance_kind": "derived" if bound is not None else "unbounded",
               "tolerance_file": info["file"], "ok": got["passed"]}
    figures.update({k: got[k] for k in ("finite", "bounded", "decisions_differing") if k in got})
    for key in ("max_diff_over_bound", "logits_beyond_bound", "decisions_near_boundary",
                "decisions_differing_not_allowed"):
        figures[key] = got.get(key)
    if not got["passed"]:
        if bound is None:
            why = "non-finite outputs (no finite bound is recorded, so only finiteness is checked)"
        else:
            why = "{} logits beyond their derived bound (at most {:.3g} times it), {} decisions changed away from " \
                  "the boundary".format(got["logits_beyond_bound"], got["max_diff_over_bound"],
                                        got["decisions_differing_not_allowed"])
        raise RunnerError("parity_failed", "{} ({}) no longer reproduces the golden outputs on {}: {}; re-export or "
                                           "check the device".format(entry["file"], precision, runtime, why))
    return figures


def _check_parity(precision, entry, figures, runtime):
    """Older bundles: the manifest's `parity.tolerance` (absolute, or relative to the largest |golden logit|)."""
    parity = entry.get("parity") or {}
    if "tolerance" not in parity:
        return {"tolerance": None, "ok": None}
    kind = parity.get("tolerance_kind", "absolute")
    measured, passed = within_tolerance(figures, parity["tolerance"], kind)
    if not passed:
        raise RunnerError("parity_failed", "{} ({}) no longer reproduces the golden outputs on {}: {} difference "
                                           "{:.3g} > {:g}; re-export or check the device".format(
                                               entry["file"], precision, runtime, kind, measured, parity["tolerance"]))
    return {"tolerance": parity["tolerance"], "tolerance_kind": kind, "ok": True}


def _check_agreement(bundle, precision, entry, reference, outputs, runtime):
    """The "agreement" rule (parity.py): top-1 agreement and accuracy drop within the entry's `parity` limits."""
    limits = entry["parity"]
    got = agreement(outputs, reference, golden_array(bundle, "labels"), limits["min_top1_agreement"],
                    limits.get("max_accuracy_drop", 1.0))
    if not got["passed"]:
        raise RunnerError("parity_failed", "{} ({}) no longer agrees with the golden outputs on {}: top-1 agreement "
                                           "{:.3f} (at least {:g}), accuracy drop {:.3f} (at most {:g}); re-export or "
                                           "check the device".format(entry["file"], precision, runtime,
                                                                     got["top1_agreement"],
                                                                     got["min_top1_agreement"],
                                                                     got["accuracy_drop"], got["max_accuracy_drop"]))
    got.update(tolerance_kind="agreement", ok=True)
    return got


def bench(bundle, options, args, root):
    """`args`: the parsed command line (precision, batch, warmup, repeats, no_hash), passed whole."""
    precision, batch, warmup, repeats, hashes = args.precision, args.batch, args.warmup, args.repeats, not args.no_hash
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
    out = {"source": evalset.source, "sha256": evalset.sha256, "count": int(len(evalset.labels)),
           "correct": int(correct.sum()),
           "accuracy": float(correct.mean()) if len(correct) else None, "host_robust": None, "agree_with_host": None}
    if evalset.robust is not None:
        out["host_robust"] = int(np.asarray(evalset.robust, dtype=bool).sum())
        out["agree_with_host"] = int((np.asarray(evalset.robust, dtype=bool) == correct).sum())
    if points:
        out["predictions"] = [int(p) for p in predictions]
        out["margins"] = [float(m) for m in margins(logits)]
        out["indices"] = None if evalset.indices is None else [int(i) for i in evalset.indices]
    return out


def replay(bundle, options, args):
    """`args`: the parsed command line (precision, batch, sets, no_clean, no_points, no_hash), passed whole."""
    precision, batch, set_paths, clean, points = args.precision, args.batch, args.sets, not args.no_clean, \
        not args.no_points
    hashes = not args.no_hash
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


def smooth(bundle, options, args):
    """`args`: the parsed command line (precision, sigma, n, batch, seed, set_spec, start, count, margin_below,
    phase, no_hash), passed whole."""
    precision, sigma, n, batch, seed = args.precision, args.sigma, args.n, args.batch, args.seed
    set_spec, start, count, margin_below, hashes = args.set_spec, args.start, args.count, args.margin_below, \
        not args.no_hash
    phase = args.phase
    thresholds = _thresholds(args.thresholds) if getattr(args, "noise", "gaussian") == "sound" else None
    if not sigma > 0 or n < 1 or batch < 1 or start < 0 or (count is not None and count < 0):
        raise RunnerError("usage", "--sigma must be > 0, --n and --batch at least 1, --start and --count at least 0")
    if phase not in PHASES:
        raise RunnerError("usage", "--phase must be one of {}".format(", ".join(sorted(PHASES))))
    if hashes:
        check_hashes(bundle)
    evalset = choose_set(bundle, set_spec)
    stop = len(evalset.x) if count is None else min(len(evalset.x), start + count)
    classes = int(bundle.manifest.get("num_classes") or 0)

    buffers = ring(DEPTH)  # the batches are written into these arrays in turn: nothing is allocated per batch

    votes = {row: np.zeros(classes, dtype=np.int64) for row in range(start, stop)}
    low = {row: [] for row in range(start, stop)}
    offset = dict.fromkeys(range(start, stop), 0)
    inferred = collections.deque()  # (row, logits) not counted yet; append and popleft are atomic

    def tally():  # on the helper between draws (the runtime's thread only infers), and once more at the end
        while inferred:
            row, logits = inferred.popleft()
            votes[row] = _add_votes(votes[row], logits.argmax(1))
            if margin_below is not None:
                order = np.argsort(-logits.astype(np.float64), axis=1)
                gap = margins(logits)
                for i in np.nonzero(gap < margin_below)[0]:
                    low[row].append([offset[row] + int(i), int(order[i, 0]), int(order[i, 1]), float(gap[i])])
            offset[row] += len(logits)

    def rows():  # every row's batches in one stream: the helper draws the next row's while this one finishes
        for row in range(start, stop):
            if thresholds is None:
                batches = noise_batches(evalset.x[row], sigma, n, batch, seed, row, PHASES[phase], buffers)
            else:
                batches = sound_batches(evalset.x[row], thresholds, n, batch, seed, row, PHASES[phase], buffers)
            for noisy in batches:
                tally()
                yield row, noisy

    stream = prefetched(rows(), DEPTH)  # drawing starts now, while the session opens
    results = []
    try:
        session = open_session(bundle, precision, options)
        try:
            for row, noisy in stream:
                inferred.append((row, session.infer(noisy)))
            stream.close()  # the helper has ended: what it left uncounted is counted here
            tally()
            for row in range(start, stop):
                point = {"row": row, "index": None if evalset.indices is None else int(evalset.indices[row]),
                         "label": int(evalset.labels[row]), "counts": [int(c) for c in votes[row]],
                         "fingerprint": fingerprint(evalset.x[row], sigma, seed, row, PHASES[phase],
                                                    thresholds=thresholds)}
                if margin_below is not None:
                    point["low_margin"] = low[row]
                results.append(point)
            figure = _figure(bundle, precision, session, batch)
        finally:
            session.close()
    finally:
        stream.close()
    figure.update({"sigma": sigma, "n": n, "seed": seed, "phase": phase, "set": evalset.name, "start": start,
                   "points": results, "noise": RULE if thresholds is None else SOUND_RULE, "numpy": np.__version__})
    return figure


def _thresholds(path):
    """The sound noise's thresholds from the host's .npy file (one usage error when missing or malformed)."""
    try:
        thresholds = check_thresholds(np.load(path, allow_pickle=False)) if path else None
    except (OSError, ValueError):
        thresholds = None
    if thresholds is None:
        raise RunnerError("usage", "--noise sound needs --thresholds FILE: a .npy of 2K non-decreasing int64 values "
                                   "in [0, 2^60]")
    return thresholds


def _add_votes(votes, predicted):
    counts = np.bincount(predicted, minlength=len(votes))
    if len(counts) > len(votes):  # num_classes missing from the manifest: grow
        counts[:len(votes)] += votes
        return counts
    return votes + counts


def load_points(path, input_shape):
    """The centres or inputs of `logits`: a .npz whose `x` (or `x_adv`) is float32 N×C×H×W, loaded as data."""
    try:
        with np.load(path, allow_pickle=False) as data:
            key = "x" if "x" in data.files else "x_adv" if "x_adv" in data.files else None
            x = None if key is None else np.asarray(data[key])
    except (OSError, ValueError) as exc:
        raise RunnerError("set_invalid", "{} cannot be read as a .npz of arrays ({})".format(path, exc)) from None
    if x is None:
        raise RunnerError("set_invalid", "{} has no x (or x_adv) array of float32 N×C×H×W inputs".format(path))
    if x.dtype != np.float32 or x.ndim != 4 or (input_shape and list(x.shape[1:]) != list(input_shape)):
        raise RunnerError("set_invalid", "{}: x must be float32 N×{} but is {} {}".format(
            path, "×".join(str(d) for d in input_shape or ["C", "H", "W"]), x.dtype, "×".join(map(str, x.shape))))
    return x


def logits(bundle, options, args):
    """Raw float32 logits, as lists of numbers (exact: a float32 is a float64): at the set's inputs, or, with
    --samples K, at K points drawn inside the ball of radius --eps around each chosen row (balls.py).

    `args`: the parsed command line (precision, batch, set_path, rows, samples, eps, norm, seed, no_hash)."""
    from .balls import NORMS, ball_batches
    from .balls import RULE as BALL_RULE
    from .balls import fingerprint as ball_fingerprint

    batch, samples, eps = args.batch, args.samples, args.eps
    if batch < 1 or (samples is not None and samples < 1):
        raise RunnerError("usage", "--batch and --samples must be at least 1")
    if samples is not None and (eps is None or not 0 <= eps <= 1 or args.norm not in NORMS):
        raise RunnerError("usage", "--samples needs --eps in [0, 1] and --norm inf or 2")
    if not args.no_hash:
        check_hashes(bundle)
    x = load_points(args.set_path, bundle.manifest.get("input_shape"))
    chosen = list(range(len(x))) if args.rows is None else args.rows
    bad = [r for r in chosen if not 0 <= r < len(x)]
    if bad:
        raise RunnerError("usage", "--rows {} is outside 0..{} (the set has {} rows)".format(bad[0], len(x) - 1,
                                                                                           len(x)))
    session = open_session(bundle, args.precision, options)
    try:
        figure = _figure(bundle, args.precision, session, batch)
        if samples is None:
            out = predict(session, x[chosen], batch)
            figure["rows"] = [{"row": r, "logits": out[i:i + 1].tolist()} for i, r in enumerate(chosen)]
        else:
            figure["rows"] = []
            for r in chosen:
                out = np.concatenate([session.infer(b) for b in prefetched(
                    ball_batches(x[r], eps, args.norm, samples, batch, args.seed, r))])
                figure["rows"].append({"row": r, "logits": out.tolist(),
                                       "fingerprint": ball_fingerprint(x[r], eps, args.norm, args.seed, r)})
    finally:
        session.close()
    figure.update({"samples": samples, "eps": eps, "norm": args.norm, "seed": args.seed,
                   "points": None if samples is None else BALL_RULE, "numpy": np.__version__})
    return figure
