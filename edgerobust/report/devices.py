"""The report's on-device section (Marshall, Figs. 4.7/4.8: latency of each model on each board; here per precision
too), and what deployment did to robustness: host accuracy, device accuracy and the gap per precision and set.

Reads only run files: the manifest's `device` section, `device/<name>/{bench,replay}.json`, `device/fleet-*.json`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import read_json
from ..run import RunDir
from .plots import new_figure, save_figure
from .sections import md_table, register_section


def _records(run: RunDir, kind: str) -> dict[str, dict]:
    out = {}
    for name, entry in sorted(run.manifest.get("device", {}).items()):
        path = run.path / entry.get(kind, {}).get("file", f"device/{name}/{kind}.json")
        if kind in entry and path.is_file():
            out[name] = read_json(path)
    return out


def latency_rows(run: RunDir) -> list[dict]:
    """One row per device, precision and batch: compute and end-to-end p50/p99, spread, and its record."""
    spec = run.manifest.get("model", {}).get("spec", "?")
    rows = []
    for name, doc in _records(run, "bench").items():
        for r in doc["rows"]:
            rec = r.get("record", {})
            rows.append({"device": name, "model": spec, "precision": rec.get("precision"), "batch": rec.get("batch"),
                         "runtime": (rec.get("runtime") or {}).get("name"), "p50_ms": r["compute"]["p50_ms"],
                         "p99_ms": r["compute"]["p99_ms"], "cv": r["compute"]["cv"],
                         "e2e_p50_ms": r["end_to_end"]["p50_ms"], "power_mode": rec.get("power_mode"),
                         "threads": rec.get("threads"), "flag": r.get("flag"),
                         "emulated": bool(r.get("emulated") or rec.get("emulated") or doc.get("emulated")),
                         "architecture": rec.get("architecture")})
    return rows


def emulated_rows(rows: list[dict]) -> list[dict]:
    """Rows measured under user-mode emulation (qemu-user): plumbing checks, never latencies."""
    return [r for r in rows if r["emulated"]]


def measured_rows(rows: list[dict]) -> list[dict]:
    """Rows measured on the device's own hardware: the only ones compared or plotted as latencies."""
    return [r for r in rows if not r["emulated"]]


def latency_plot(rows: list[dict], path: Path, spec: str) -> Path:
    """Grouped bars: p50 compute latency per device, one bar per precision (batch 1 where measured)."""
    devices = sorted({r["device"] for r in rows})
    precisions = sorted({r["precision"] for r in rows})
    smallest = {d: min(r["batch"] for r in rows if r["device"] == d) for d in devices}
    fig, ax = new_figure(max(5.0, 1.4 * len(devices) + 2), 4)
    width = 0.8 / max(len(precisions), 1)
    x = np.arange(len(devices))
    for i, precision in enumerate(precisions):
        values = [next((r["p50_ms"] for r in rows if r["device"] == d and r["precision"] == precision
                        and r["batch"] == smallest[d]), np.nan) for d in devices]
        ax.bar(x + i * width, values, width, label=precision)
    ax.set_xticks(x + width * (len(precisions) - 1) / 2, devices)
    ax.set(ylabel="latency per batch (ms, p50, compute)", yscale="log",
           title=f"{spec} on each device (smallest batch measured)")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def set_labels(run: RunDir) -> dict[str, str]:
    """Each saved adversarial set's key (a hash of the evaluation's settings) with what made it, for people:
    `9a69b03e8974 (standard linf ε=0.1)`, from RUN/robustness.json."""
    path = run.path / "robustness.json"
    results = read_json(path).get("results", {}) if path.is_file() else {}
    labels = {}
    for key, entry in results.items():
        settings = entry.get("settings") or {}
        attacks = settings.get("attacks") or []
        made_by = "+".join(attacks) if attacks else settings.get("suite") or "attacks"
        labels[key] = f"{key} ({made_by} {entry.get('norm', '?')} ε={entry.get('eps', float('nan')):g})"
    return labels


def gap_rows(run: RunDir) -> list[dict]:
    rows = []
    labels = set_labels(run)
    for name, doc in _records(run, "replay").items():
        for r in doc["rows"]:
            for key, s in r["sets"].items():
                rows.append({"device": name, "precision": r["precision"], "set": labels.get(key, key),
                             "count": s["count"],
                             "host": s.get("host_accuracy"), "device_accuracy": s["accuracy"], "gap": s.get("gap"),
                             "diverge": s.get("diverge_from_reference")})
    return rows


@register_section("devices", "latency on each device and host vs device accuracy per precision")
def devices_section(run: RunDir, figures: Path) -> str | None:
    if not run.manifest.get("device"):
        return None
    parts = ["## On the device", ""]
    everything = latency_rows(run)
    rows, emulated = measured_rows(everything), emulated_rows(everything)
    if rows:
        spec = rows[0]["model"]
        parts += ["Measured on the device by the edgerobust runner (compute = the runtime call with the input in "
                  "place; end to end = numpy in, numpy out). Each row's full record (software, clocks, "
                  "temperatures, warm-up, repeats) is in `device/<device>/bench.json`.", "",
                  md_table(("device", "model", "precision", "batch", "runtime", "threads", "power mode", "p50 ms",
                            "p99 ms", "cv", "end-to-end p50 ms", "flag"),
                           [(r["device"], r["model"], r["precision"], r["batch"], r["runtime"],
                             "runtime default" if r["threads"] == 0 else r["threads"],
                             (r["power_mode"] or {}).get("name", "n/a"), r["p50_ms"], r["p99_ms"], r["cv"],
                             r["e2e_p50_ms"], r["flag"] or "") for r in rows]), ""]
        plot = latency_plot(rows, figures / "device_latency.png", spec)
        parts += [f"![latency per device]({plot.relative_to(run.path)})", ""]
    if emulated:
        parts += ["### Emulated devices (not latencies)", "",
                  "These devices ran the runner under user-mode emulation (qemu-user): the runs prove the runner, its "
                  "dependencies and the protocol on the device's architecture, but an emulator's timings say nothing "
                  "about the device's speed, so they are neither tabled nor plotted as latencies.", "",
                  md_table(("device", "architecture", "precision", "batch", "runtime"),
                           [(r["device"], r["architecture"] or "n/a", r["precision"], r["batch"], r["runtime"])
                            for r in emulated]), ""]
    gaps = gap_rows(run)
    if gaps:
        parts += ["### Robustness after deployment", "",
                  "Accuracy of the host model (PyTorch, fp32) and of the deployed artifact on the device on the same "
                  "points: the clean golden set and the adversarial sets `evaluate` found on the host. "
                  "gap = host − device; ≠ fp32 = points where the artifact's prediction on the device differs from "
                  "the fp32 artifact's on the same device.", "",
                  md_table(("device", "precision", "set", "points", "host accuracy", "device accuracy", "gap",
                            "≠ fp32"),
                           [(g["device"], g["precision"], g["set"], g["count"], g["host"], g["device_accuracy"],
                             g["gap"], "—" if g["diverge"] is None else g["diverge"]) for g in gaps]), ""]
    failures = []
    for kind in ("bench", "replay"):
        path = run.path / "device" / f"fleet-{kind}.json"
        if path.is_file():
            failures += [(r["device"], r["host"], kind, r["error"]["kind"], r["error"]["message"])
                         for r in read_json(path)["rows"] if r["status"] != "ok"]
    for name, entry in run.manifest["device"].items():
        for kind, info in entry.items():
            if isinstance(info, dict) and info.get("error") and not any(f[0] == name and f[2] == kind
                                                                        for f in failures):
                failures.append((name, info.get("host"), kind, info["error"]["kind"], info["error"]["message"]))
    if failures:
        parts += ["### Devices that failed", "", md_table(("device", "host", "measurement", "error", "message"),
                                                         failures), ""]
    return "\n".join(parts)
