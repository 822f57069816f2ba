"""The report's precision table: clean and robust accuracy of each exported artifact (fp32, fp16, int8) per source
and combined, how far each one's decisions diverge from fp32's (RUN/precision_robustness.json), certified accuracy
per method where RUN/certificates.json exists, and any masking check the surrogate failed."""
from __future__ import annotations

from pathlib import Path

from ..errors import EdgeRobustError
from ..io import read_json
from ..run import RunDir
from .sections import md_table, register_section

FILE = "precision_robustness.json"  # written by evaluation/artifact.py (`evaluate --artifact`)


@register_section("precisions", "clean and robust accuracy per exported precision, and divergence from fp32")
def precisions_section(run: RunDir, figures: Path) -> str | None:
    path = run.file(FILE)
    if not path.is_file():
        return None
    try:
        record = read_json(path)
        rows_in = record["precisions"]
        sources = list(record["sources"])
    except (EdgeRobustError, KeyError, TypeError) as exc:
        return f"## Robustness per precision\n\n**{path.name} cannot be read: {exc}**\n"
    lines = ["## Robustness per precision", "",
             f"Bundle `{record.get('bundle')}` (target {record.get('target')}), the first {record.get('n')} test "
             f"points of the saved adversarial sets, L∞ ε = {record.get('eps')}. Each artifact is judged by its own "
             "onnxruntime outputs: transfer = the saved sets replayed; square = Square driven by the artifact's "
             f"outputs ({(record.get('square') or {}).get('queries')} queries); gradient = APGD-CE through the "
             "artifact's differentiable surrogate (fake quantization, straight-through rounding), its points judged "
             f"on the artifact. {record.get('robust_rule')}.", ""]
    rows = []
    for precision, row in rows_in.items():
        divergence = row.get("divergence") or {}
        rows.append((precision, row["clean_accuracy"], *[row["robust_by_source"].get(s) for s in sources],
                     row["robust_accuracy"], divergence.get("clean", "") if divergence else "—",
                     ", ".join(f"{k} {v}" for k, v in divergence.items() if k != "clean") or "—"))
    certified = _certified(run)
    if certified:  # certify's lower bound beside the attacks' upper one, where certificates exist
        columns = sorted({key for per in certified.values() for key in per})
        rows = [(*row, *[certified.get(row[0], {}).get(c, "—") for c in columns]) for row in rows]
    else:
        columns = []
    lines += [md_table(("precision", "clean", *[f"robust ({s})" for s in sources], "robust (combined)",
                        "differs from fp32 (clean)", "differs from fp32 (under attack)",
                        *[f"certified ({c})" for c in columns]), rows), ""]
    for precision, row in rows_in.items():
        for item in row.get("masking") or []:
            if item.get("status") == "FAIL":
                lines.append(f"- **{precision}: gradient masking through the surrogate — {item['check']}**: "
                             f"{item['detail']}")
    return "\n".join(lines)


def _certified(run: RunDir) -> dict[str, dict[str, object]]:
    """Certified accuracy per precision and `method arithmetic ε` from certificates.json; "not certified" for the
    precisions certify refused."""
    path = run.file("certificates.json")
    if not path.is_file():
        return {}
    try:
        record = read_json(path)
        out: dict[str, dict[str, object]] = {}
        for artifact in record["artifacts"]:
            for row in artifact["rows"]:
                key = f"{record['method']} {row['arithmetic']} ε={row['eps']:g}"
                out.setdefault(artifact["precision"], {})[key] = "vacuous" if row.get("vacuous") \
                    else row["certified_accuracy"]
        keys = {k for per in out.values() for k in per}
        for precision in record.get("not_certified") or {}:
            out[precision] = dict.fromkeys(keys, "not certified")
        return out
    except (EdgeRobustError, KeyError, TypeError):
        return {}  # the certification section says the file cannot be read
