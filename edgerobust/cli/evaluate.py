"""`edgerobust evaluate`: attacks, the cumulative standard suite, robustness curve, transfer, masking checks."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..evaluation.api import ROBUSTNESS_FILE, evaluate_run
from ..report.robustness import curve_plot, transfer_heatmap
from ..run import RunDir
from .common import command, console, device_option, parse_fraction
from .render import table


def parse_grid(text: str) -> list[float]:
    return [parse_fraction(part.strip(), "ε") for part in text.split(",") if part.strip()]


@command
def evaluate(
    run: Path = typer.Argument(..., help="Run directory (from `edgerobust train`)."),
    suite: str = typer.Option("standard", "--suite", help="standard (APGD-CE → APGD-T → Square) or none."),
    fab: bool = typer.Option(False, "--fab", help="Add FAB-T to the standard suite, before Square (AutoAttack's "
                                                  "order: APGD-CE → APGD-T → FAB-T → Square)."),
    eps: str = typer.Option("8/255", "--eps", help="Perturbation budget in [0,1] pixels: 0.03, 8/255 or 3%."),
    norm: str = typer.Option("linf", "--norm", help="linf or l2."),
    attack: list[str] = typer.Option([], "--attack", "-a", help="Extra single attack (repeatable): pgd, fgsm, mim, "
                                                               "apgd-ce, square, deepfool, cw, fab, ..."),
    curve: bool = typer.Option(False, "--curve", help="Robustness curve (accuracy against ε, PGD)."),
    curve_eps: Optional[str] = typer.Option(None, "--curve-eps", help="ε grid for --curve, e.g. 0,0.05,0.1,0.2."),
    curve_steps: int = typer.Option(100, "--curve-steps", help="PGD steps at every ε of the curve."),
    transfer: list[Path] = typer.Option([], "--transfer", help="Another run for the transfer matrix (repeatable)."),
    ensemble: list[Path] = typer.Option([], "--ensemble", help="Evaluate RUN + these runs as one softmax ensemble."),
    n: Optional[int] = typer.Option(None, "--n", help="Evaluate the first N test images (default: all)."),
    steps: int = typer.Option(100, "--steps", help="Iterations per APGD (and FAB-T) run."),
    restarts: int = typer.Option(1, "--restarts", help="APGD (and FAB-T) restarts."),
    queries: int = typer.Option(1000, "--queries", help="Square attack query budget."),
    targets: int = typer.Option(9, "--targets", help="Target classes for targeted APGD (and FAB-T)."),
    minimal: str = typer.Option("fgs-search", "--minimal", help="Minimal-perturbation attack (fgs-search, "
                                                                "deepfool, cw, fab, fab-t) or 'none'."),
    masking: bool = typer.Option(True, "--masking/--no-masking", help="Gradient-masking checks."),
    seed: int = typer.Option(0, "--seed", help="Random seed (results are deterministic under it)."),
    batch_size: int = typer.Option(256, "--batch-size"),
    device: str = device_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Attack a run's model and write RUN/robustness.json, plots in RUN/figures and the manifest's robustness."""
    target = RunDir.open(run)
    result = evaluate_run(
        target, suite=suite, eps=parse_fraction(eps, "ε"), norm=norm, attacks=attack, curve=curve,
        curve_grid=parse_grid(curve_eps) if curve_eps else None, curve_steps=curve_steps,
        transfer=[RunDir.open(p) for p in transfer], ensemble=[RunDir.open(p) for p in ensemble], n=n, seed=seed,
        steps=steps, n_restarts=restarts, square_queries=queries, n_target_classes=targets, fab=fab,
        minimal=None if minimal == "none" else minimal, masking_checks=masking, batch_size=batch_size,
        progress=False if quiet else None, device=device)
    print_robustness(result)
    figures = target.file("figures")
    if result.get("curve"):
        console.print(f"curve plot: {curve_plot(result['curve'], figures / 'robustness_curve.png')}")
    if result.get("transfer"):
        console.print(f"transfer plot: {transfer_heatmap(result['transfer'], figures / 'transfer_matrix.png')}")
    console.print(f"wrote [bold]{target.file(ROBUSTNESS_FILE)}[/]")


def print_robustness(r: dict[str, Any]) -> None:
    suite = r.get("suite")
    head = f"{r['n']} test images, {r['norm']} ε={r['eps']:.4g}"
    if suite:
        steps = zip(suite["cumulative"][1:], suite["attacks"], strict=True)
        rows = [("clean", f"{suite['cumulative'][0][1]:.2%}", "")]
        rows += [(name, f"{acc:.2%}", a["broken"]) for (name, acc), a in steps]
        console.print(table(f"standard suite (cumulative accuracy), {head}", ("after", "accuracy", "broken"), rows))
        console.print(f"[italic]{suite['note']}.[/]")
        for skipped in suite.get("skipped", []):
            console.print(f"[yellow]skipped[/] {skipped}")
    if r.get("attacks"):
        console.print(table(f"single attacks, {head}", ("attack", "robust accuracy"),
                            [(a["attack"], f"{a['robust_accuracy']:.2%}") for a in r["attacks"]]))
    if r.get("curve"):
        c = r["curve"]
        console.print(table(f"robustness curve ({c['attack']}, {c['settings'].get('steps')} steps)", ("ε", "accuracy"),
                            [(f"{e:.4g}", f"{a:.2%}") for e, a in c["points"]]))
    if r.get("transfer"):
        t = r["transfer"]
        names = [Path(m).name for m in t["models"]]
        console.print(table("transfer accuracy (row = source, column = target)", ["source"] + names,
                            [[names[i]] + [f"{v:.2%}" for v in row] for i, row in enumerate(t["accuracy"])]))
    if r.get("minimal"):
        m = r["minimal"]
        console.print(table(f"minimal perturbations ({m['attack']['attack']}, success {m['success_rate']:.2%})",
                            ("norm", "min", "max", "mean", "median", "std"),
                            [(nm, *(m[nm][k] for k in ("min", "max", "mean", "median", "std")))
                             for nm in ("linf", "l2")]))
    if r.get("masking"):
        rows = [("[bold red]FAIL[/]" if c["status"] == "FAIL" else c["status"], c["check"], c["detail"])
                for c in r["masking"]]
        console.print(table("gradient-masking checks", ("status", "check", "detail"), rows))
        if r.get("masking_failed"):
            console.print("[bold red]⚠ GRADIENT MASKING SUSPECTED: the robust accuracy above is probably too high.[/]")
