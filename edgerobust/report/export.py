"""The report's export section: per target, the bundle, its parity figures and the memory estimate."""
from __future__ import annotations

from pathlib import Path

from ..run import RunDir
from .sections import md_table, register_section


def _mib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:.2f} MiB"


def _tolerance(parity: dict) -> str:
    """A fixed tolerance, or the agreement rule (int8) with both accuracies."""
    if parity.get("tolerance_kind") == "agreement":
        return (f"agreement: accuracy {parity['accuracy']:.2%} vs fp32 {parity['reference_accuracy']:.2%} on "
                f"{parity['points']} points, drop ≤ {parity['max_accuracy_drop'] * 100:g} pt"
                f"{' (forced)' if parity.get('forced') else ''}")
    return f"{parity.get('tolerance'):g} {parity.get('tolerance_kind', '')}"


@register_section("export", "ONNX export per target: parity against PyTorch, memory estimate, bundle")
def export_section(run: RunDir, figures: Path) -> str | None:
    exports = run.manifest.get("export")
    if not exports:
        return None
    lines = ["## Export", "",
             "Each bundle's graph takes [0,1] pixels (normalisation inside) with a dynamic batch; parity compares "
             "onnxruntime (CPU) with PyTorch eager on the same real test inputs.", ""]
    rows = []
    for target, entry in exports.items():
        for precision, parity in entry.get("parity", {}).items():
            rows.append((target, precision, entry.get("opset"), entry.get("runtime"), parity.get("inputs"),
                         parity.get("max_abs_diff"), parity.get("top1_agreement"),
                         _tolerance(parity)))
    lines += [md_table(("target", "precision", "opset", "runtime on device", "inputs", "max abs diff",
                        "top-1 agreement", "tolerance"), rows), ""]
    left = [(target, precision, item.get("reason", "")) for target, entry in exports.items()
            for precision, item in (entry.get("left_out") or {}).items()]
    if left:
        lines += ["Left out of the bundle (over the agreement rule's tolerance, or no calibration set):", "",
                  md_table(("target", "precision", "why"), left), ""]
    mem_rows = [(target, e["memory"]["batch"], _mib(e["memory"]["weights_bytes"]),
                 _mib(e["memory"]["activation_peak_bytes"]), _mib(e["memory"]["estimate_bytes"]),
                 _mib(e["memory"].get("budget_bytes")), f"`{e['bundle']}`")
                for target, e in exports.items() if e.get("memory")]
    lines += ["Memory estimate (weights + peak live activations; runtime overhead not included):", "",
              md_table(("target", "batch", "weights", "activations", "estimate", "budget", "bundle"), mem_rows), ""]
    return "\n".join(lines)
