"""Stored evaluation results: `RUN/robustness.json` keeps one entry per evaluation settings, and each suite's
per-point outcome (robust mask and adversarial examples) lies in `RUN/adversarial/<key>.npz`, so anybody can
check which points an attack broke and a device can replay the very examples.

`<key>` is a short stable hash of the settings (attacks, ε, norm, steps, restarts, seed, n, ...); a second
evaluation with other settings adds an entry instead of overwriting the first. The file's top level repeats the
latest entry, which is what the report shows.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_path, read_json, write_json

ROBUSTNESS_FILE = "robustness.json"
ADVERSARIAL_DIR = "adversarial"


def settings_key(settings: dict[str, Any]) -> str:
    """12 hex digits of the sha256 of the settings as canonical JSON: the same settings give the same key."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def save_points(run_path: Path, key: str, x_adv: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                robust: torch.Tensor) -> Path:
    """RUN/adversarial/<key>.npz: x_adv (float32 N×C×H×W pixels), labels and indices (int64), robust (bool)."""
    path = run_path / ADVERSARIAL_DIR / f"{key}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, x_adv=x_adv.detach().cpu().numpy().astype(np.float32),
                            labels=labels.cpu().numpy().astype(np.int64),
                            indices=indices.cpu().numpy().astype(np.int64),
                            robust=robust.cpu().numpy().astype(bool))
    return path


def load_points(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in ("x_adv", "labels", "indices", "robust")}


def previous_results(path: Path) -> dict[str, Any]:
    """The entries of an existing robustness.json (an older single-result file becomes one entry)."""
    if not path.is_file():
        return {}
    try:
        old = read_json(path)
    except Exception:  # noqa: BLE001  (an unreadable earlier file is replaced, not fatal)
        return {}
    if not isinstance(old, dict):
        return {}
    results = old.get("results")
    if isinstance(results, dict):
        return {k: v for k, v in results.items() if isinstance(v, dict)}
    if "eps" in old:
        return {f"legacy-{settings_key(old)}": old}
    return {}


def write_results(run_path: Path, key: str, entry: dict[str, Any]) -> Path:
    """Add (or replace) the entry for `key` in RUN/robustness.json; the top level repeats it."""
    path = run_path / ROBUSTNESS_FILE
    results = previous_results(path)
    results[key] = entry
    return write_json(path, {**entry, "key": key, "results": results})
