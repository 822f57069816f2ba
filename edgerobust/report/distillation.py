"""The report's distillation section: teacher against student (Barmpas, ch. 8) — accuracy, agreement, PGD
robustness, size and latency, and the temperature sweep when the student is one of a sweep. Reads run files only."""
from __future__ import annotations

from pathlib import Path

from ..errors import EdgeRobustError
from ..io import read_json
from ..run import RunDir
from .sections import md_table, register_section


def _latency(manifest: dict) -> str | None:
    bench = manifest.get("bench") or {}
    p50 = bench.get("p50_ms") or {}
    key = next((k for k in sorted(p50) if k.endswith("@1")), next(iter(sorted(p50)), None))
    return f"{p50[key]:.4g} ms ({key})" if key else None


@register_section("distillation", "teacher against student: accuracy, agreement, robustness, size, latency")
def distillation_section(run: RunDir, figures: Path) -> str | None:
    d = run.manifest.get("distillation")
    if not isinstance(d, dict):
        return None
    t, s = d.get("teacher", {}), d.get("student", {})
    teacher_manifest: dict = {}
    try:
        teacher_manifest = RunDir.open(t["path"]).manifest
    except (EdgeRobustError, KeyError, TypeError):
        pass  # the teacher moved or is gone: its recorded figures stand, its latency is unknown
    metrics = run.manifest.get("metrics", {})
    attack = f"{s.get('attack', 'pgd')} accuracy (ε = {s.get('eps', float('nan')):.4g})"
    rows = [("model", t.get("spec"), run.manifest["model"]["spec"]),
            ("parameters", t.get("parameters"), metrics.get("parameters")),
            ("clean accuracy", t.get("clean_accuracy"), s.get("clean_accuracy")),
            (attack, t.get("robust_accuracy"), s.get("robust_accuracy")),
            ("agreement with the teacher (test)", None, d.get("test_agreement")),
            ("latency p50", _latency(teacher_manifest), _latency(run.manifest))]
    settings = ", ".join(f"{k} = {v}" for k, v in (d.get("settings") or {}).items() if k not in ("name",))
    lines = ["## Distillation", "",
             f"Student distilled by **{d.get('method')}** ({settings}) from teacher `{t.get('path')}` "
             f"(sha256 {str(t.get('sha256'))[:12]}…), on {d.get('pool', {}).get('name')} "
             f"({d.get('pool', {}).get('size')} images, {d.get('held_out')} held out for agreement).", "",
             md_table(("", "teacher", "student"), rows), ""]
    sweep_path = run.path.parent / "sweep.json"
    if sweep_path.is_file():
        try:
            sweep = read_json(sweep_path)
            lines += ["### Temperature sweep", "",
                      md_table(("T", "test accuracy", "agreement", f"{s.get('attack', 'pgd')} accuracy", "epochs"),
                               [(r["temperature"], r["test_accuracy"], r["agreement"], r["robust_accuracy"],
                                 r["epochs"]) for r in sweep["rows"]]), ""]
        except (EdgeRobustError, KeyError, TypeError) as exc:
            lines += [f"**{sweep_path} is unreadable: {exc}**", ""]
    return "\n".join(lines)
