"""CERTIFY and PREDICT over many points with any `VoteCounter` (Cohen et al. 2019, Alg. 1-2; Song's thesis, ch. 2).

Selection (n0, phase `select`), estimation (n, phase `estimate`) and PREDICT's own samples (phase `predict`) come
from three independent noise streams per point; the statistics are `statistics.py`'s. A point's record is
self-describing (σ, α, n0, n, seed, runtime, precision, architecture, artifact sha256), so shards merge by row.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .counters import VoteCounter
from .statistics import (
    ABSTAIN,
    average_certified_radius,
    certified_accuracy,
    certify_counts,
    lower_confidence_bound,
    predict_counts,
    predict_level,
    radius_ceiling,
)


def certify_points(counter: VoteCounter, x: np.ndarray, labels: Sequence[int], rows: Sequence[int], *,
                   sigma: float, alpha: float, n0: int, n: int, predict: bool = False,
                   chunk: int = 1, on_points: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One record per point: selection and estimation counts, the certified class (−1 = abstain), p_A's lower
    bound and the radius; with `predict`, PREDICT's answer on its own n samples. `chunk` points go to the counter
    at a time (a device call)."""
    out = []
    for first in range(0, len(rows), chunk):
        part = slice(first, first + chunk)
        counts0 = counter.counts(x[part], rows[part], "select", n0)
        counts = counter.counts(x[part], rows[part], "estimate", n)
        predicted = counter.counts(x[part], rows[part], "predict", n) if predict else None
        for i, row in enumerate(rows[part]):
            label = int(labels[first + i])
            slack = counter.slack(x[first + i]) if hasattr(counter, "slack") else (0.0, 0.0)
            cls, radius = certify_counts(counts0[i], counts[i], sigma, alpha, *slack)
            top = int(np.argmax(counts0[i]))
            record = {"row": int(row), "label": label, "prediction": cls, "radius": radius,
                      "correct": cls == label, "abstained": cls == ABSTAIN,
                      "p_lower": lower_confidence_bound(int(counts[i][top]), n, alpha),
                      "counts0": counts0[i].tolist(), "counts": counts[i].tolist()}
            if slack != (0.0, 0.0):
                record["p_slack"], record["radius_slack"] = slack
            if predicted is not None:
                record["predict"] = predict_counts(predicted[i], alpha, slack[0])
                record["predict_counts"] = predicted[i].tolist()
                if slack != (0.0, 0.0):
                    record["predict_level"] = predict_level(n, alpha, slack[0])
            out.append(record)
        if on_points:
            on_points(len(rows[part]))
    return out


def summarize(points: Sequence[dict[str, Any]], radii: Sequence[float], sigma: float, alpha: float,
              n: int) -> dict[str, Any]:
    """Certified accuracy on the radius grid, ACR, clean (radius ≥ 0) accuracy, abstentions and the ceiling."""
    predictions = [p["prediction"] for p in points]
    found = [p["radius"] for p in points]
    labels = [p["label"] for p in points]
    summary = {"points": len(points), "radii": list(radii),
               "certified_accuracy": certified_accuracy(predictions, found, labels, radii),
               "acr": average_certified_radius(predictions, found, labels),
               "abstained": int(sum(p["abstained"] for p in points)),
               "correct": int(sum(p["correct"] for p in points)),
               "radius_ceiling": radius_ceiling(sigma, n, alpha)}
    if points and "predict" in points[0]:
        summary["predict_accuracy"] = float(np.mean([p["predict"] == p["label"] for p in points]))
        summary["predict_abstained"] = int(sum(p["predict"] == ABSTAIN for p in points))
    return summary
