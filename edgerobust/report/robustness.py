"""The report's robustness section (from RUN/robustness.json) and its plots: robustness curve, transfer heat map."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import EdgeRobustError
from ..run import RunDir
from .plots import new_figure, save_figure
from .sections import md_table, register_section


def curve_plot(curve: dict[str, Any], path: str | Path, title: str = "robustness curve") -> Path:
    fig, ax = new_figure()
    eps = [p[0] for p in curve["points"]]
    ax.plot(eps, [p[1] for p in curve["points"]], marker="o", label=f"{curve['attack']} ({curve['norm']})")
    ax.axhline(curve["chance"], color="grey", linestyle="--", label="chance")
    ax.set(xlabel=f"ε ({curve['norm']}, pixels in [0,1])", ylabel="accuracy", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def transfer_heatmap(transfer: dict[str, Any], path: str | Path) -> Path:
    names = [Path(n).name or n for n in transfer["models"]]
    matrix = transfer["accuracy"]
    fig, ax = new_figure(1.6 + 1.2 * len(names), 1.2 + 1.0 * len(names))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="target (evaluated)", ylabel="source (attacked)", title="transfer accuracy")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)


def masking_lines(checks: list[dict[str, str]]) -> list[str]:
    failed = [c for c in checks if c["status"] == "FAIL"]
    lines = []
    if failed:
        lines += [f"> **⚠ GRADIENT MASKING SUSPECTED: {len(failed)} check(s) FAILED.** The robust accuracy above is "
                  "probably too high; do not trust it until the failing checks pass.", ""]
    rows = [(("**FAIL**" if c["status"] == "FAIL" else c["status"]), c["check"], c["detail"]) for c in checks]
    return lines + [md_table(("status", "check", "detail"), rows), ""]


@register_section("robustness", "attacks: cumulative suite, robustness curve, minimal perturbations, masking checks")
def robustness_section(run: RunDir, figures: Path) -> str | None:
    path = run.file("robustness.json")
    if not path.is_file():
        return None
    from ..io import read_json

    r = read_json(path)
    if not isinstance(r, dict):
        raise EdgeRobustError(f"{path} is not a robustness record (a {type(r).__name__}, not a table); re-run "
                              "`edgerobust evaluate`")
    lines = ["## Robustness (attacks)", "",
             f"{r['n']} {r.get('dataset', '')} test images, {r['norm']} ε = {r['eps']:.4g}, seed {r['seed']}."]
    if r.get("ensemble"):
        lines += ["", f"Ensemble of {len(r['ensemble']['members'])} models ({r['ensemble']['combine']})."]
    lines.append("")
    if r.get("masking_failed"):
        lines += ["> **⚠ GRADIENT MASKING SUSPECTED — see the checks below.**", ""]
    suite = r.get("suite")
    if suite:
        names = [name for name, _ in suite["cumulative"]]
        lines += ["### Standard suite (cumulative)", "",
                  md_table(names, [[f"{acc:.2%}" for _, acc in suite["cumulative"]]]), "",
                  f"*Robust accuracy {suite['robust_accuracy']:.2%}: {suite['note']}.* "
                  "Each column counts the points no attack so far has broken, so it never exceeds the one before.", ""]
        rows = [(a["attack"], a["attacked"], a["broken"], a["seconds"],
                 ", ".join(f"{k}={v}" for k, v in a.items() if k not in ("attack", "attacked", "broken", "seconds")))
                for a in suite["attacks"]]
        lines += [md_table(("attack", "points attacked", "broken", "seconds", "settings"), rows), ""]
        for skipped in suite.get("skipped", []):
            lines += [f"Skipped {skipped}.", ""]
    if r.get("attacks"):
        rows = [(a["attack"], f"{a['robust_accuracy']:.2%}",
                 ", ".join(f"{k}={v}" for k, v in a.items() if k not in ("attack", "robust_accuracy")))
                for a in r["attacks"]]
        lines += ["### Single attacks", "", md_table(("attack", "robust accuracy (upper bound)", "settings"), rows), ""]
    curve = r.get("curve")
    if curve:
        plot = curve_plot(curve, figures / "robustness_curve.png", f"robustness curve: {r['model']}")
        lines += ["### Robustness curve", "", f"![robustness curve]({plot.relative_to(run.path)})", "",
                  md_table(("ε", "accuracy"), [(f"{e:.4g}", f"{a:.2%}") for e, a in curve["points"]]), "",
                  f"{curve['attack']} with {curve['settings'].get('steps')} steps at every ε; "
                  + ("stopped below chance." if curve["reached_below_chance"] else
                     "**did not reach chance within the grid.**"), ""]
    transfer = r.get("transfer")
    if transfer:
        plot = transfer_heatmap(transfer, figures / "transfer_matrix.png")
        names = transfer["models"]
        rows = [[names[i]] + [f"{v:.2%}" for v in row] for i, row in enumerate(transfer["accuracy"])]
        lines += ["### Transfer matrix", "", f"![transfer matrix]({plot.relative_to(run.path)})", "",
                  md_table(["source \\ target"] + names, rows), "", transfer["note"] + ".", ""]
    minimal = r.get("minimal")
    if minimal:
        rows = [(norm, *(minimal[norm][k] for k in ("min", "max", "mean", "median", "std")))
                for norm in ("linf", "l2")]
        lines += ["### Minimal perturbations", "",
                  f"{minimal['attack']['attack']} on {minimal['n']} points ({minimal['labels']} labels): success "
                  f"rate {minimal['success_rate']:.2%}.", "",
                  md_table(("norm", "min", "max", "mean", "median", "std"), rows), ""]
    if r.get("masking"):
        lines += ["### Gradient-masking checks", ""] + masking_lines(r["masking"])
    if isinstance(r.get("points"), dict):
        lines += [f"Per-point results (robust mask and adversarial examples): `{r['points'].get('file')}`; "
                  f"robustness.json keeps {len(r.get('results') or {})} evaluation(s), keyed by their settings "
                  f"(this one: `{r.get('key')}`).", ""]
    return "\n".join(lines)
