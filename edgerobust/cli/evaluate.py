"""`edgerobust evaluate`: attacks, the cumulative standard suite, robustness curve, transfer, masking checks."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import typer

from ..attacks import ATTACKS
from ..config import EvaluateConfig, given, option_help
from ..evaluation.api import ROBUSTNESS_FILE, evaluate_run
from ..evaluation.artifact import evaluate_artifacts
from ..report.robustness import curve_plot, transfer_heatmap
from ..run import RunDir
from ..runner.precisions import PRECISIONS
from . import options as opts
from . import remote as remote_cmd
from .common import RECIPE_HELP, command, console, device_option, recipe_section, split_list
from .defaults import RUN_HELP, run_argument
from .render import table

H = functools.partial(option_help, EvaluateConfig)
MINIMAL_ATTACKS = [name for name in ATTACKS if ATTACKS.get(name).minimal]


def _artifact_table(result: dict) -> None:
    sources = result["sources"]
    rows = [(p, f"{r['clean_accuracy']:.3f}", *[f"{r['robust_by_source'][s]:.3f}" for s in sources],
             f"{r['robust_accuracy']:.3f}", str((r.get("divergence") or {}).get("clean", "—")),
             str(sum(v for k, v in (r.get("divergence") or {}).items() if k != "clean")) if r.get("divergence")
             else "—") for p, r in result["precisions"].items()]
    console.print(table(f"robustness per precision: {result['n']} points, ε = {result['eps']:.4g} (robust = minimum "
                        "over sources)", ("precision", "clean", *sources, "robust", "≠fp32 clean", "≠fp32 attacked"),
                        rows))
    console.print("written: precision_robustness.json")


@command
def evaluate(
    run: Optional[Path] = typer.Argument(None, help=RUN_HELP),
    suite: Optional[str] = typer.Option(None, "--suite", help=H("suite", "standard (APGD-CE → APGD-T → Square) or "
                                                                         "none")),
    fab: Optional[bool] = typer.Option(None, "--fab/--no-fab", help=H(
        "fab", "Add FAB-T to the standard suite, before Square (AutoAttack's order)")),
    eps: Optional[str] = typer.Option(None, "--eps", help=H("eps", "Perturbation budget in [0,1] pixels: 0.03, 8/255 "
                                                                  "or 3%")),
    norm: Optional[str] = typer.Option(None, "--norm", help=H("norm", "linf or l2")),
    attack: list[str] = typer.Option([], "--attack", "-a", help="Extra single attack (repeatable): "
                                                               f"{', '.join(ATTACKS)}."),
    curve: Optional[bool] = typer.Option(None, "--curve/--no-curve", help=H(
        "curve", "Robustness curve (accuracy against ε, PGD)")),
    curve_eps: Optional[str] = typer.Option(None, "--curve-eps", help="ε grid for --curve, e.g. 0,0.05,0.1,0.2."),
    curve_steps: Optional[int] = typer.Option(None, "--curve-steps", help=H("curve_steps")),
    transfer: list[Path] = typer.Option([], "--transfer", help="Another run for the transfer matrix (repeatable)."),
    ensemble: list[Path] = typer.Option([], "--ensemble", help="Evaluate RUN + these runs as one softmax ensemble."),
    n: Optional[int] = typer.Option(None, "--n", help="Evaluate the first N test images (default: all)."),
    steps: Optional[int] = typer.Option(None, "--steps", help=H("steps")),
    restarts: Optional[int] = typer.Option(None, "--restarts", help=H("n_restarts")),
    queries: Optional[int] = typer.Option(None, "--queries", help=H("square_queries")),
    targets: Optional[int] = typer.Option(None, "--targets", help=H("n_target_classes")),
    minimal: Optional[str] = typer.Option(None, "--minimal", help=H("minimal", "Minimal-perturbation attack "
                                                                              f"({', '.join(MINIMAL_ATTACKS)}) "
                                                                              "or 'none'")),
    masking: Optional[bool] = typer.Option(None, "--masking/--no-masking", help=H("masking_checks")),
    seed: Optional[int] = typer.Option(None, "--seed", help=H("seed")),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=H("batch_size")),
    recipe: Optional[str] = opts.recipe_option(help=RECIPE_HELP.format(
        section="[evaluate] (with --host/--hosts: [device])")),
    device: str = device_option(),
    quiet: bool = opts.quiet_option("No progress bars."),
    artifact: Optional[Path] = typer.Option(None, "--artifact", help="An export bundle of RUN: clean and robust "
                                            "accuracy of each of its artifacts (fp32, fp16, int8) by its own "
                                            "onnxruntime outputs: the saved adversarial sets replayed and Square "
                                            "(--queries) → RUN/precision_robustness.json."),
    host: Optional[str] = remote_cmd.HOST, hosts: Optional[Path] = remote_cmd.HOSTS,
    target_name: Optional[str] = typer.Option(None, "--target", help="With --host: the export to replay (default: "
                                              "the run's only one)."),
    precision: Optional[list[str]] = typer.Option(None, "--precision", help="With --host: precisions to replay "
                                                  f"(one of {', '.join(PRECISIONS)}; default: every one the bundle "
                                                  "has)."),
    python: Optional[str] = remote_cmd.PYTHON, ssh_config: Optional[Path] = remote_cmd.SSH_CONFIG,
    device_dir: Optional[str] = remote_cmd.DEVICE_DIR, insecure: bool = remote_cmd.INSECURE,
    timeout: Optional[float] = remote_cmd.TIMEOUT,
    trust_ssh_config: bool = remote_cmd.TRUST_SSH_CONFIG,
    max_output: Optional[float] = remote_cmd.MAX_OUTPUT,
) -> None:
    """Attack a run's model and write RUN/robustness.json, plots in RUN/figures and the manifest's robustness.

    With --host/--hosts: replay the adversarial sets saved here on the deployed artifact instead (host vs device
    accuracy per precision, into RUN/device/)."""
    if remote_cmd.on_device(host, hosts):
        config = recipe_section(recipe, "device", dict(
            **remote_cmd.reach_overrides(host, python, ssh_config, device_dir, insecure, timeout, max_output),
            target=target_name,
            precisions=given(precision or None, "--precision"), replay_batch=given(batch_size, "--batch-size")))
        return remote_cmd.run_remote("replay", [run_argument(run)], config, hosts, quiet, trust_ssh_config)
    config = recipe_section(recipe, "evaluate", dict(
        suite=suite, eps=eps, norm=norm, attacks=given(attack or None, "--attack"), curve=curve,
        curve_grid=given(split_list(curve_eps), "--curve-eps"), curve_steps=curve_steps, n=n, seed=seed, steps=steps,
        n_restarts=given(restarts, "--restarts"), square_queries=given(queries, "--queries"),
        n_target_classes=given(targets, "--targets"), fab=fab, minimal=minimal,
        masking_checks=given(masking, "--masking/--no-masking"), batch_size=batch_size,
        artifact=given(None if artifact is None else str(artifact), "--artifact")))
    target = RunDir.open(run_argument(run))
    if config.artifact is not None:
        return _artifact_table(evaluate_artifacts(target, config))
    result = evaluate_run(target, config, transfer=[RunDir.open(p) for p in transfer],
                          ensemble=[RunDir.open(p) for p in ensemble], progress=False if quiet else None,
                          device=device)
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
