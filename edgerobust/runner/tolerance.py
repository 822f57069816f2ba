"""Golden outputs checked against the bundle's derived per-logit tolerance (pure numpy, Python 3.6+).

The host derives the bound (edgerobust/export/tolerance.py: a forward error analysis after Higham, *Accuracy and
Stability of Numerical Algorithms*, ch. 3) and records it per precision as `models.<p>.golden_tolerance`; this module
is the one check of outputs against it. `edgerobust.export.tolerance` imports it, so the host's `verify` and the
runner's `verify` decide alike by construction (as bench/timing.py imports stats.py).

Rule: every |output - golden| must lie within its bound, and a decision (argmax) may differ only where the golden
top-2 margin is below twice that input's largest bound. Without a finite bound (`file: null`) only finiteness is
checked.
"""
import numpy as np


def decision_may_differ(golden, tolerance):
    """Inputs whose argmax may legitimately differ: golden top-2 margin below twice the input's largest bound."""
    golden = np.asarray(golden, dtype=np.float64)
    if golden.shape[1] < 2:
        return np.zeros(len(golden), dtype=bool)
    top2 = np.sort(golden, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) < 2.0 * np.asarray(tolerance, dtype=np.float64).max(axis=1)


def compare_with_tolerance(outputs, golden, tolerance):
    """Check `outputs` against `golden` within the per-logit `tolerance` (None: unbounded, finiteness only).

    `passed` means the outputs are finite, every logit is within its bound and every differing decision is one the
    margin rule allows.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    golden = np.asarray(golden, dtype=np.float64)
    if outputs.shape != golden.shape:
        raise ValueError("outputs {} and golden outputs {} differ in shape".format(outputs.shape, golden.shape))
    finite = bool(np.isfinite(outputs).all())
    diff = np.abs(outputs - golden)
    differ = outputs.argmax(1) != golden.argmax(1)
    figures = {"inputs": int(len(golden)), "max_abs_diff": float(diff.max()) if diff.size else 0.0,
               "decisions_differing": int(differ.sum()),
               "top1_agreement": float(1.0 - differ.mean()) if len(differ) else 1.0, "finite": finite}
    if tolerance is None:
        figures.update(bounded=False, passed=finite)
        return figures
    tolerance = np.asarray(tolerance, dtype=np.float64)
    if tolerance.shape != golden.shape:
        raise ValueError("tolerance {} and golden outputs {} differ in shape".format(tolerance.shape, golden.shape))
    allowed = decision_may_differ(golden, tolerance)
    beyond = ~(diff <= tolerance)  # a NaN difference is beyond every bound
    ratio = diff / np.maximum(tolerance, np.finfo(np.float64).tiny)
    figures.update(bounded=True, max_bound=float(tolerance.max()) if tolerance.size else 0.0,
                   max_diff_over_bound=float(np.max(ratio)) if ratio.size else 0.0,
                   logits_beyond_bound=int(beyond.sum()), decisions_near_boundary=int(allowed.sum()),
                   decisions_differing_not_allowed=int((differ & ~allowed).sum()))
    figures["passed"] = bool(finite and figures["logits_beyond_bound"] == 0 and
                             figures["decisions_differing_not_allowed"] == 0)
    return figures
