"""Parity figures: a model's outputs against reference outputs on the same inputs (pure numpy, Python 3.6+).

The one comparison host and device both use: `export` (edgerobust/export/parity.py, onnxruntime against PyTorch) and
the runner's `verify` (the device against the bundle's golden outputs) report the same figures under the same keys.
How a precision's parity is judged is its record's `parity` rule (precisions.py): "derived" bounds are checked in
tolerance.py; a fixed tolerance (absolute, or relative to the largest |reference logit|) by `within_tolerance`; and
"agreement" (top-1 agreement and accuracy drop, for arithmetics without a usable bound) by `agreement`.
"""
import numpy as np


def compare(reference, candidate):
    """Absolute, mean and relative (to max |reference|) differences, top-1 agreement, and the number of inputs."""
    diff = np.abs(np.asarray(reference, np.float64) - np.asarray(candidate, np.float64))
    scale = float(np.abs(reference).max()) if np.size(reference) else 0.0
    return {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "max_rel_diff": float(diff.max() / (scale or 1.0)) if diff.size else 0.0,
            "top1_agreement": float((np.argmax(reference, 1) == np.argmax(candidate, 1)).mean()) if len(diff) else 1.0,
            "inputs": int(len(reference))}


def within_tolerance(figures, tolerance, kind="absolute"):
    """(measured difference, passed) for a fixed tolerance: absolute, or relative to the largest |reference logit|."""
    measured = figures["max_rel_diff"] if kind == "relative" else figures["max_abs_diff"]
    return measured, bool(measured <= tolerance)


def agreement(outputs, reference, labels, min_top1_agreement, max_accuracy_drop):
    """The "agreement" rule: top-1 agreement with the reference outputs and the accuracy drop on the labels.

    The drop is judged in points of the sample, at its resolution: at most max(1, ⌊max_accuracy_drop · n⌋) more
    misclassified points than the reference (one point of n is the smallest drop n points can show, so 64 golden
    inputs allow one flip where 1000 test points allow ten at a 1-point tolerance); a tolerance of 0 allows none.
    (⌊0.29 · 100⌋ is 28 in binary floating point: + 1e-9 before the floor.)"""
    predicted, expected = np.argmax(outputs, 1), np.argmax(reference, 1)
    labels = np.asarray(labels)
    n = len(labels)
    top1 = float((predicted == expected).mean()) if len(predicted) else 1.0
    correct, reference_correct = int((predicted == labels).sum()), int((expected == labels).sum())
    accuracy = correct / n if n else 1.0
    reference_accuracy = reference_correct / n if n else 1.0
    allowed = max(1, int(np.floor(max_accuracy_drop * n + 1e-9))) if n and max_accuracy_drop > 0 else 0  # 28.999…
    return {"top1_agreement": top1, "accuracy": accuracy, "reference_accuracy": reference_accuracy,
            "accuracy_drop": reference_accuracy - accuracy, "min_top1_agreement": min_top1_agreement,
            "max_accuracy_drop": max_accuracy_drop, "allowed_drop": allowed / n if n else 0.0,
            "dropped_points": reference_correct - correct, "allowed_points": allowed,
            "passed": bool(top1 >= min_top1_agreement and reference_correct - correct <= allowed)}
