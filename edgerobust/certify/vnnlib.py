"""VNN-LIB export: the artifact, one property per point and instances.csv in the VNN-COMP benchmark layout
(onnx/, vnnlib/, instances.csv: `onnx path,vnnlib path,timeout`), so any competition verifier can check a claim.

Each property is the negation of robustness (a verifier answers `unsat` when the point is robust): the input box
[max(x - ε, 0), min(x + ε, 1)] (L∞ ∩ the pixel box) and "some other class j scores at least the label".
The property is about the real-valued function of the ONNX file, as verifiers read it (the `real` model).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EdgeRobustError
from ..io import write_bytes, write_text


def property_text(x: np.ndarray, label: int, classes: int, eps: float) -> str:
    flat = np.asarray(x, np.float64).reshape(-1)
    lo, hi = np.clip(flat - eps, 0, 1), np.clip(flat + eps, 0, 1)
    lines = [f"; robustness of class {label} in the L-inf ball of radius {eps!r} intersected with [0, 1]"]
    lines += [f"(declare-const X_{i} Real)" for i in range(flat.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(classes)]
    for i in range(flat.size):
        lines += [f"(assert (<= X_{i} {hi[i]!r}))", f"(assert (>= X_{i} {lo[i]!r}))"]
    lines.append("(assert (or")
    lines += [f"    (and (>= Y_{j} Y_{label}))" for j in range(classes) if j != label]
    lines.append("))")
    return "\n".join(lines) + "\n"


def check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdgeRobustError(f"{out} is not an empty directory; --export-vnnlib needs a new or empty one")


def export_vnnlib(out: str | Path, onnx_file: Path, x: np.ndarray, labels: np.ndarray, classes: int, eps: float,
                  norm: str = "inf", timeout: int = 60) -> Path:
    """Write OUT/onnx/<file>, OUT/vnnlib/point_<i>.vnnlib and OUT/instances.csv; returns instances.csv."""
    if norm != "inf":
        raise EdgeRobustError("--export-vnnlib writes L-inf properties (VNN-LIB boxes); use --norm inf")
    out = Path(out)
    check_out(out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    (out / "vnnlib").mkdir(exist_ok=True)
    write_bytes(out / "onnx" / onnx_file.name, Path(onnx_file).read_bytes())
    rows = []
    for i, (point, label) in enumerate(zip(x, labels, strict=True)):
        name = f"vnnlib/point_{i}.vnnlib"
        write_text(out / name, property_text(point, int(label), classes, eps))
        rows.append(f"onnx/{onnx_file.name},{name},{timeout}")
    return write_text(out / "instances.csv", "\n".join(rows) + "\n")
