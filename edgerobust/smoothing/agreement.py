"""Host against device smoothing votes: a statistical rule that scales to n = 100,000; the exact bracket for small n.

- Same seed and the same noise stream (the runner's `fingerprint` matches the host's): both counted the very same
  samples, so any vote difference is arithmetic (fp16, another CPU, TensorRT). Counts alone give the least number of
  samples whose vote differs, ½‖c_host − c_device‖₁, reported per point and phase.
- Different seeds (or a stream the device's numpy draws differently): the two count vectors are independent samples
  of the same smoothed classifier when the arithmetic does not matter; a two-sided Fisher exact test of the top
  class's count against the rest, per point, with a Bonferroni level α/points.
- Small n (≤ `EXACT_MAX`): `export.tolerance.smoothing_agreement`, the float64 forward error bound per sample, which
  says exactly which samples may vote differently (cheap only for few samples).
- Large n at the same samples: the same analysis on the first `SUBSAMPLE` estimation samples counts the samples near
  the boundary; the differing votes must stay within n times the Clopper-Pearson upper bound (at α) of that fraction.
- Sound noise (smoothing/sound.py) under the same rules: the analyses redraw the sound samples (the runner's
  `sound_batches` with the entry's thresholds) instead of the Gaussian stream.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import beta, fisher_exact

EXACT_MAX = 2000
SUBSAMPLE = 128
PHASE_COUNTS = {"select": "counts0", "estimate": "counts"}


def differing_votes(a: list[int], b: list[int]) -> int:
    """The least number of samples whose vote differs between two count vectors over the same samples."""
    size = max(len(a), len(b))
    a, b = np.pad(np.asarray(a), (0, size - len(a))), np.pad(np.asarray(b), (0, size - len(b)))
    return int(np.abs(a - b).sum() // 2)


def two_sided_test(host: list[int], device: list[int], top: int) -> float:
    """p-value of Fisher's exact test that the top class has the same probability on both sides."""
    h, d = int(host[top]) if top < len(host) else 0, int(device[top]) if top < len(device) else 0
    return float(fisher_exact([[h, sum(host) - h], [d, sum(device) - d]]).pvalue)


def compare_entries(host: dict[str, Any], device: dict[str, Any], alpha: float = 0.001,
                    exact: dict[int, dict[str, Any]] | None = None,
                    limits: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Agreement of a host entry and a device entry of smoothing.json on the rows both certified."""
    host_points = {p["row"]: p for p in host["points"]}
    rows = [p for p in device["points"] if p["row"] in host_points]
    same_seed = host["settings"]["seed"] == device["settings"]["seed"]
    level = alpha / max(1, len(rows))
    out_rows = []
    for p in rows:
        h = host_points[p["row"]]
        row = {"row": p["row"], "host_prediction": h["prediction"], "device_prediction": p["prediction"],
               "host_radius": h["radius"], "device_radius": p["radius"]}
        if same_seed and p.get("same_stream_as_host", False):
            row["rule"] = "same samples"
            row["differing_at_least"] = {ph: differing_votes(h[k], p[k]) for ph, k in PHASE_COUNTS.items()}
            row["passed"] = None  # reported; judged below where the samples near the boundary were counted
            if limits and p["row"] in limits:
                row["near_boundary_subsample"] = limits[p["row"]]
                row["passed"] = row["differing_at_least"]["estimate"] <= limits[p["row"]]["limit"]
        else:
            top = int(np.argmax(h["counts0"]))
            row["rule"] = "two-sided Fisher test"
            row["p_value"] = two_sided_test(h["counts"], p["counts"], top)
            row["passed"] = row["p_value"] > level
        if exact and p["row"] in exact:
            row["exact"] = exact[p["row"]]
            row["passed"] = bool(exact[p["row"]]["passed"]) and row["passed"] is not False
        out_rows.append(row)
    judged = [r["passed"] for r in out_rows if r["passed"] is not None]
    return {"host": host["key"], "device": device["key"], "same_seed": same_seed, "level": level,
            "points": len(out_rows), "passed": all(judged) if judged else None,
            "differing_at_least": sum(sum(r.get("differing_at_least", {}).values()) for r in out_rows),
            "same_prediction": sum(r["host_prediction"] == r["device_prediction"] for r in out_rows),
            "rows": out_rows}


def thresholds_of(settings: dict[str, Any]) -> np.ndarray | None:
    """The sound noise's thresholds for an entry's σ (None under Gaussian noise): the analyses redraw its samples."""
    if settings.get("noise", "gaussian") != "sound":
        return None
    from .sound import discrete_gaussian

    return discrete_gaussian(float(settings["sigma"])).thresholds


def exact_brackets(bundle: Path, precision: str, x: np.ndarray, device: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The float64 bracket of every device point's estimation votes (small n only: it walks every sample)."""
    import onnx

    from ..export.bundle import read_manifest
    from ..export.tolerance import smoothing_agreement

    s = device["settings"]
    if s["n"] > EXACT_MAX:
        return {}
    proto = onnx.load(str(Path(bundle) / read_manifest(bundle)["models"]["fp32"]["file"]))
    thresholds = thresholds_of(s)
    return {p["row"]: smoothing_agreement(proto, x[p["row"]], p["row"], s["sigma"], s["n"], s["seed"], p["counts"],
                                          precision, "estimate", thresholds) for p in device["points"]}


def near_boundary_limits(bundle: Path, precision: str, x: np.ndarray, device: dict[str, Any],
                         alpha: float) -> dict[int, dict[str, Any]]:
    """Per point: samples near the boundary among the first `SUBSAMPLE` estimation samples (exact float64 analysis)
    and the most votes that may differ over all n: ⌈n · Clopper-Pearson upper bound of that fraction at α⌉."""
    import onnx

    from ..export.bundle import read_manifest
    from ..export.tolerance import smoothing_agreement

    s = device["settings"]
    k = min(SUBSAMPLE, s["n"])
    proto = onnx.load(str(Path(bundle) / read_manifest(bundle)["models"]["fp32"]["file"]))
    thresholds = thresholds_of(s)
    out = {}
    for p in device["points"]:
        near = smoothing_agreement(proto, x[p["row"]], p["row"], s["sigma"], k, s["seed"], [k], precision,
                                   "estimate", thresholds)["near_boundary"]
        upper = 1.0 if near >= k else float(beta.ppf(1 - alpha, near + 1, k - near))
        out[p["row"]] = {"samples": k, "near_boundary": near, "limit": int(np.ceil(s["n"] * upper))}
    return out
