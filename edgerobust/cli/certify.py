"""`edgerobust certify`: certificates for the exported artifacts, in the arithmetic of the device (certify/api.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..bounds import ARITHMETIC_MODELS
from ..bounds.engine import METHODS
from ..certify.lipschitz import GLOBAL_METHODS
from ..config import parse_number
from ..run import RunDir
from ..run_select import bundle_of
from . import remote as remote_cmd
from .common import command, console, recipe_section, split_list
from .defaults import bundle_argument
from .render import table


@command
def certify(
    target: Optional[Path] = typer.Argument(None, help="A run (its latest bundle) or a bundle directory (default: "
                                                        "the current one, else the most recent run's)."),
    eps: str = typer.Option("2/255", "--eps", help="ε in [0,1] pixels, comma-separated: 0.01, 2/255, 1%"),
    method: str = typer.Option("crown", "--method", help=f"Bound method: {', '.join((*METHODS, *GLOBAL_METHODS))}"),
    peck_mode: Optional[str] = typer.Option(None, "--peck-mode", help="With --method peck: sound (default; proven "
                                            "lower bounds) or thesis (Peck as published, NOT a certificate: its "
                                            "conv, batch-norm and ReLU MLP-block bounds are unsound)."),
    peck_attacks: str = typer.Option("fgs-search,deepfool", "--peck-attacks", help="With --method peck: the minimal "
                                     "attacks whose smallest perturbations check Peck's bounds for violations."),
    norm: str = typer.Option("inf", "--norm", help="Ball: inf or 2 (intersected with the [0,1] box)"),
    n: int = typer.Option(16, "--n", "--points", min=1, help="Certify the bundle's first N golden inputs (under "
                          "torchrun write --points: torchrun's own parser takes --n for its options)."),
    arithmetic: Optional[str] = typer.Option(None, "--arithmetic", help=(
        f"Arithmetic models, comma-separated (default: those declared for the precision): "
        f"{', '.join(ARITHMETIC_MODELS)}")),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16, int8 (default: every ONNX model "
                                                                      "the method can certify)."),
    radius: bool = typer.Option(True, "--radius/--no-radius", help="Per-point largest certified ε by bisection."),
    budget_mb: int = typer.Option(1024, "--budget-mb", min=16, help="Working memory per batch (MiB)."),
    vnnlib: Optional[Path] = typer.Option(None, "--export-vnnlib", help="Also write the fp32 artifact, one VNN-LIB "
                                          "property per point (first ε) and instances.csv here (VNN-COMP layout)."),
    host: Optional[str] = typer.Option(None, "--host", help="Check RUN/certificates.json on a device instead: its own "
                                       "outputs at random and attacked points inside every certified ball must stay "
                                       "within the bounds (user@host, an ssh alias, or local[:PYTHON])."),
    hosts: Optional[Path] = typer.Option(None, "--hosts", help="Check on a fleet (TOML), the certified points "
                                                                "sharded over its devices."),
    trust_ssh_config: bool = remote_cmd.TRUST_SSH_CONFIG,
    check_samples: int = typer.Option(10_000, "--check-samples", min=1, help="With --host: random points per "
                                                                              "certified ball."),
    seed: int = typer.Option(0, "--seed", help="With --host: the seed of the points drawn on the device."),
    profile: Optional[str] = typer.Option(None, "--target", help="With --host: the device's profile (default: the "
                                                                "run's only export)."),
    python: Optional[str] = remote_cmd.PYTHON, ssh_config: Optional[Path] = remote_cmd.SSH_CONFIG,
    device_dir: Optional[str] = remote_cmd.DEVICE_DIR, insecure: bool = remote_cmd.INSECURE,
    timeout: Optional[float] = remote_cmd.TIMEOUT, max_output: Optional[float] = remote_cmd.MAX_OUTPUT,
) -> None:
    """Certify the bundle's ONNX artifacts on its golden inputs: RUN/certificates.json and a table (with --host:
    check the device's outputs inside the certified balls against those certificates)."""
    from ..certify.api import certify_bundle, check_eps

    if remote_cmd.on_device(host, hosts):
        config = recipe_section(None, "device", dict(
            **remote_cmd.reach_overrides(host, python, ssh_config, device_dir, insecure, timeout, max_output),
            target=profile, precisions=split_list(precision)))
        if hosts:
            return check_on_fleet(target, config, hosts, trust_ssh_config, check_samples, seed, split_list(arithmetic))
        return check_on_device(target, config, check_samples, seed, split_list(arithmetic))

    values = check_eps([parse_number(v, "--eps") for v in split_list(eps) or []])
    if target is not None and (target / "model.json").is_file():
        run = RunDir.open(target)
        bundle = bundle_of(run)
    else:
        bundle, run = bundle_argument(target), None
    result = certify_bundle(bundle, values, method=method, norm=norm.removeprefix("l"), n=n,
                            arithmetic=split_list(arithmetic), precisions=split_list(precision), radius=radius,
                            budget=budget_mb << 20, run=run, vnnlib=vnnlib, peck_mode=peck_mode,
                            peck_attacks=tuple(split_list(peck_attacks) or ()))
    from ..certify.shard import worker_rank

    if worker_rank():  # under torchrun rank 0 alone prints (and wrote certificates.json)
        return
    if result.get("peck_mode"):
        print_peck(result)
    if result.get("peck_mode") == "thesis":
        return
    rows = []
    for artifact in result["artifacts"]:
        for row in artifact["rows"]:
            mean = artifact["radius"].get(row["arithmetic"], {}).get("mean")
            rows.append([artifact["precision"], row["arithmetic"], row["eps"],
                         "vacuous" if row["vacuous"] else row["certified_accuracy"],
                         "—" if row["vacuous"] else row["robust_error_bound"],
                         row["attack_robust_accuracy"], mean])
    console.print(table(f"certificates ({result['method']}, L{result['norm']}, n={result['n']}, clean accuracy "
                        f"{result['clean_accuracy']:.3f})",
                        ["precision", "arithmetic", "ε", "certified acc.", "robust error bound",
                         "attack robust acc.", "mean certified ε"], rows))
    for precision, reason in (result.get("not_certified") or {}).items():
        console.print(f"{precision}: not certified: {reason}", markup=False)
    for artifact in result["artifacts"]:
        for row in artifact["rows"]:
            if row["vacuous"]:
                console.print(f"{artifact['precision']} {row['arithmetic']}: {row['vacuous']}", markup=False)
                break


def print_peck(result) -> None:
    """Peck's per-point lower bounds beside the attacks' smallest perturbations; thesis mode labelled as no
    certificate."""
    thesis = result["peck_mode"] == "thesis"
    rows = []
    for artifact in result["artifacts"]:
        peck = artifact["peck"]
        minimal = peck["minimal"]
        rows.append([artifact["precision"], peck["mean"], peck["mean_per_pixel"], minimal["mean"],
                     minimal["success_rate"], minimal["violations"],
                     ", ".join(map(str, minimal["violating_points"])) or "—"])
    title = ("Peck lower bounds, THESIS mode (as published): NOT a certificate" if thesis else
             "Peck lower bounds, sound mode (proven)")
    console.print(table(f"{title}: L2 norm of the smallest prediction-changing perturbation, real arithmetic, "
                        f"n={result['n']}", ["precision", "mean bound", "mean bound / pixel",
                                              "mean attack minimum", "attack success", "violations",
                                              "violating points"], rows))
    console.print(result["artifacts"][0]["peck"]["note"], markup=False)
    bad = sum(a["peck"]["minimal"]["violations"] for a in result["artifacts"])
    if bad and thesis:
        console.print(f"{bad} points where an attack found a shorter perturbation than the thesis bound (expected: "
                      "the thesis bounds are unsound)", markup=False)
    elif bad:
        from ..errors import EdgeRobustError

        raise EdgeRobustError(f"{bad} points where an attack found a shorter perturbation than the sound Peck bound; "
                              "a sound bound cannot be violated: this is a bug, report it with certificates.json")


def _run_and_target(target: Optional[Path], config, fleet: bool = False):
    from dataclasses import replace

    from ..errors import EdgeRobustError

    if target is None or not (target / "model.json").is_file():
        raise EdgeRobustError("certify --host/--hosts checks a run's certificates.json on a device; give the run "
                              "directory")
    run = RunDir.open(target)
    if config.target is None and not fleet:  # a fleet's devices name their targets
        exports = list(run.manifest.get("export", {}))
        if len(exports) != 1:
            raise EdgeRobustError(f"run {run.path} has {'no export' if not exports else 'several exports'}; name the "
                                  "device's profile with --target")
        config = replace(config, target=exports[0])
    return run, config


def check_on_fleet(target: Optional[Path], config, hosts: Path, trust: bool, samples: int, seed: int,
                   arithmetic: list[str] | None) -> None:
    """`certify RUN --hosts fleet.toml`: the certified points sharded over the fleet (certify_check_fleet)."""
    from rich.text import Text

    from ..errors import EdgeRobustError
    from ..remote.certify_check import certify_check_fleet
    from ..remote.fleet import load_fleet
    from .common import err_console

    run, config = _run_and_target(target, config, fleet=True)
    fleet = load_fleet(hosts, config, trust)
    for setting in fleet.trusted_ssh_settings:
        err_console.print(Text(f"warning: trusted ssh_config of {hosts}: {setting}", "bold yellow"))
    summary = certify_check_fleet(run, fleet, samples=samples, seed=seed, arithmetic=arithmetic)
    rows = [[r["device"], f"{r['shard'][0]} of {r['shard'][1]}", r["status"], r.get("checked_outputs", "—"),
             r.get("violations", "—"), ", ".join(map(str, r.get("violating_points", []))) or
             (r["error"]["message"] if r["status"] != "ok" else "—")] for r in summary["rows"]]
    console.print(table(f"device outputs inside certified balls, sharded over {hosts}",
                        ["device", "shard", "status", "outputs checked", "violations", "violating points / error"],
                        rows))
    if summary["violations"]:
        raise EdgeRobustError(f"{summary['violations']} device outputs left their certified bounds; the certificate "
                              f"does not hold on every device: see {run.path / 'device'}")
    if summary["unchecked_shards"]:
        raise EdgeRobustError(f"{len(summary['unchecked_shards'])} of {len(summary['rows'])} shards were not checked "
                              f"(a device failed); their points are unchecked: see {run.path / 'device'}")


def check_on_device(target: Optional[Path], config, samples: int, seed: int, arithmetic: list[str] | None) -> None:
    """`certify RUN --host`: remote/certify_check.py, a table per precision, ε and arithmetic model; exit 2 when any
    device output left its bounds (every violation is in RUN/device/<device>/certify_check.json)."""
    from ..errors import EdgeRobustError
    from ..remote.certify_check import device_certify_check

    run, config = _run_and_target(target, config)
    doc = device_certify_check(run, config, samples=samples, seed=seed, arithmetic=arithmetic, progress=False)
    rows = [[r["precision"], r["arithmetic"], r["eps"], r["certified_points"], r["checked_outputs"], r["violations"],
             r["margin_violations"], r["interval_violations"] if r["logit_intervals"] else "not in certificate",
             ", ".join(map(str, r["violating_points"])) or "—"] for r in doc["rows"]]
    console.print(table(f"device outputs inside certified balls on {doc['host']} ({doc['settings']['runtime']}, "
                        f"{samples} random points per ball and the attacks' points inside it)",
                        ["precision", "arithmetic", "ε", "certified points", "outputs checked", "violations",
                         "of margins", "of logit intervals", "violating points"], rows))
    console.print(f"certify check: [bold]{run.path / 'device'}[/]")
    if doc["violations"]:
        raise EdgeRobustError(f"{doc['violations']} device outputs left their certified bounds (points "
                              f"{sorted({p for r in doc['rows'] for p in r['violating_points']})}); the certificate "
                              "does not hold on this device: see certify_check.json")
