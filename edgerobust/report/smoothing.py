"""The report's randomized-smoothing section (Song's thesis, Table 5.1 and Fig. 5.1 shapes): certified accuracy on
a grid of L2 radii and the ACR per σ, runtime and precision; the certified-accuracy curves side by side; host against
device agreement; and what the certificate assumes. Reads RUN/smoothing.json only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeRobustError
from ..io import read_json
from ..run import RunDir
from .plots import new_figure, save_figure
from .sections import md_table, register_section

SMOOTHING_FILE = "smoothing.json"  # smoothing/api.py's; named here so the report imports nothing above it


def label(entry: dict[str, Any]) -> str:
    s = entry["settings"]
    where = f"device {s.get('host')}" if s.get("where") == "device" else "host"
    return f"σ={s['sigma']:g} {s['runtime']} {s['precision']} ({where}, n={s['n']:,})"


def certified_plot(entries: list[dict[str, Any]], path: str | Path) -> Path:
    """Certified accuracy against L2 radius, one step curve per entry (several σ side by side)."""
    fig, ax = new_figure()
    top = max([max(e["summary"]["radii"]) for e in entries] + [p["radius"] for e in entries for p in e["points"]])
    grid = np.linspace(0.0, top * 1.05 or 1.0, 500)
    for entry in entries:  # the exact curve from the points' radii; the table's grid as markers on it
        good = np.array([p["radius"] for p in entry["points"] if p["correct"]])
        total = max(1, len(entry["points"]))
        curve = [(good >= r).sum() / total for r in grid]
        line, = ax.plot(grid, curve, label=label(entry))
        ax.plot(entry["summary"]["radii"], entry["summary"]["certified_accuracy"], "o", markersize=3,
                color=line.get_color())
    ax.set(xlabel="L2 radius (pixels in [0,1])", ylabel="certified accuracy", ylim=(0, 1.02),
           title="randomized smoothing: certified accuracy (CERTIFY)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def read_smoothing(run: RunDir) -> dict[str, Any] | None:
    path = run.file(SMOOTHING_FILE)
    if not path.is_file():
        return None
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise EdgeRobustError(f"{path} is not a smoothing record; re-run `edgerobust smooth`")
    return doc


def table_rows(entries: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    radii = entries[0]["summary"]["radii"]
    columns = ["σ", "runtime", "precision", "where", "points", "ACR", "abstained"] + [f"{r:g}" for r in radii]
    rows = []
    for e in entries:
        s, m = e["settings"], e["summary"]
        acc = dict(zip(m["radii"], m["certified_accuracy"], strict=True))
        where = s["where"] + (" (sound noise)" if s.get("noise") == "sound" else "")
        rows.append([s["sigma"], s["runtime"], s["precision"], where, m["points"], m["acr"], m["abstained"]]
                    + [f"{100 * acc[r]:.1f}" if r in acc else "" for r in radii])
    return columns, rows


@register_section("smoothing", "randomized smoothing: certified accuracy, ACR, host vs device agreement")
def smoothing_section(run: RunDir, figures: Path) -> str | None:
    doc = read_smoothing(run)
    if not doc or not doc["results"]:
        return None
    entries = sorted(doc["results"].values(), key=lambda e: (e["settings"]["where"], e["settings"]["sigma"]))
    columns, rows = table_rows(entries)
    first = entries[0]["settings"]
    lines = ["## Randomized smoothing (certified L2)", "",
             f"CERTIFY (Cohen et al. 2019) with n0 = {first['n0']:,} selection and n = {first['n']:,} estimation "
             f"samples, α = {first['alpha']:g}; certified accuracy (%) at each L2 radius and the average certified "
             "radius (wrong or abstained points count 0).", "", md_table(columns, rows), ""]
    plot = certified_plot(entries, figures / "smoothing_certified.png")
    lines += [f"![certified accuracy]({plot.relative_to(run.path).as_posix()})", ""]
    agreement = doc.get("agreement") or {}
    if agreement:
        rows = []
        for device_key, found in agreement.items():
            for a in found:
                exact = [r["exact"] for r in a["rows"] if "exact" in r]
                rows.append([device_key, a["host"], "same" if a["same_seed"] else "different", a["points"],
                             a["same_prediction"], a["differing_at_least"],
                             sum(e["near_boundary"] for e in exact) if exact else "",
                             {True: "pass", False: "**FAIL**", None: "reported"}[a["passed"]]])
        lines += ["### Host against device", "",
                  "Same seed: both counted the same noisy samples (stream fingerprints match); the least number of "
                  "samples whose vote differs is reported, and for small n the exact float64 bracket bounds the "
                  "samples near the boundary. Different seeds: a two-sided Fisher test per point at α/points.", "",
                  md_table(["device entry", "host entry", "seed", "points", "same prediction",
                            "differing votes (≥)", "near boundary (exact)", "verdict"], rows), ""]
    assumptions = list(dict.fromkeys(e["assumptions"] for e in entries if e.get("assumptions")))  # gaussian, sound
    if assumptions:
        lines += ["### What the certificate assumes", ""] + [line for a in assumptions for line in (a, "")]
    return "\n".join(lines)
