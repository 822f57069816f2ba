"""`edgerobust smooth`: randomized-smoothing certificates (CERTIFY, optionally PREDICT) on a host runtime or device."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from ..config import given, option_help
from ..io import read_json
from ..report.smoothing import certified_plot
from ..run import RunDir
from ..smoothing import SMOOTHING_FILE, SmoothConfig, SmoothingError, smooth_run
from . import remote as remote_cmd
from .common import RECIPE_HELP, command, console, err_console, recipe_section, split_list
from .defaults import RUN_HELP, run_argument
from .render import table

H = functools.partial(option_help, SmoothConfig)


@command
def smooth(
    run: Optional[Path] = typer.Argument(None, help=RUN_HELP),
    sigma: Optional[str] = typer.Option(None, "--sigma", help=H("sigma", "Noise σ in [0,1] pixels; a comma list "
                                                                         "certifies each (e.g. 0.25,0.5)")),
    alpha: Optional[str] = typer.Option(None, "--alpha", help=H("alpha")),
    n0: Optional[int] = typer.Option(None, "--n0", help=H("n0")),
    n: Optional[int] = typer.Option(None, "--n", help=H("n")),
    batch: Optional[int] = typer.Option(None, "--batch", help=H("batch")),
    seed: Optional[int] = typer.Option(None, "--seed", help=H("seed")),
    points: Optional[int] = typer.Option(None, "--points", help=H("points")),
    start: Optional[int] = typer.Option(None, "--start", help=H("start")),
    count: Optional[int] = typer.Option(None, "--count", help=H("count")),
    runtime: Optional[str] = typer.Option(None, "--runtime", help=H("runtime")),
    precision: Optional[str] = typer.Option(None, "--precision", help=H("precision")),
    threads: Optional[int] = typer.Option(None, "--threads", help=H("threads")),
    radii: Optional[str] = typer.Option(None, "--radii", help=H("radii", "L2 radii of the table, a comma list")),
    predict: Optional[bool] = typer.Option(None, "--predict/--no-predict", help=H("predict")),
    noise: Optional[str] = typer.Option(None, "--noise", help=H("noise")),
    artifact: Optional[Path] = typer.Option(None, "--artifact", help="The exported bundle to certify (onnxruntime "
                                            "and --host; default: the run's export)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    host: Optional[str] = remote_cmd.HOST, hosts: Optional[Path] = remote_cmd.HOSTS,
    target: Optional[str] = typer.Option(None, "--target", help="With --host: the device profile of the export "
                                         "(default: the --artifact's target)."),
    python: Optional[str] = remote_cmd.PYTHON, ssh_config: Optional[Path] = remote_cmd.SSH_CONFIG,
    device_dir: Optional[str] = remote_cmd.DEVICE_DIR, insecure: bool = remote_cmd.INSECURE,
    timeout: Optional[float] = remote_cmd.TIMEOUT, max_output: Optional[float] = remote_cmd.MAX_OUTPUT,
    trust_ssh_config: bool = remote_cmd.TRUST_SSH_CONFIG,
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help=RECIPE_HELP.format(
        section="[smooth] (with --host/--hosts: [device])")),
) -> None:
    """Certify a run's Gaussian-smoothed classifier (Cohen et al.) into RUN/smoothing.json and RUN/figures.

    With --host the device's runner draws the noise and counts the votes on the exported artifact; the host computes
    the certificates from those counts and compares them with host entries of the same σ, α, n0 and n."""
    if host and hosts:
        raise SmoothingError("give --host or --hosts, not both")
    if trust_ssh_config and not hosts:
        raise SmoothingError("--trust-ssh-config applies to the ssh_config a fleet file names; give --hosts")
    run_dir = RunDir.open(run_argument(run))
    device = None
    if host or hosts:
        device = recipe_section(recipe, "device", dict(
            **remote_cmd.reach_overrides(host, python, ssh_config, device_dir, insecure, timeout, max_output),
            target=target))
    settings = {"sigma": given(split_list(sigma), "--sigma"), "alpha": alpha, "n0": n0, "n": n, "batch": batch,
                "seed": seed, "points": points, "start": start, "count": count, "runtime": runtime,
                "precision": precision, "threads": threads, "radii": given(split_list(radii), "--radii"),
                "predict": predict, "noise": noise}
    config = recipe_section(recipe, "smooth", settings)
    if hosts:
        from ..remote.fleet import load_fleet
        from ..smoothing.fleet import smooth_fleet

        fleet = load_fleet(hosts, device, trust_ssh_config)
        for setting in fleet.trusted_ssh_settings:
            err_console.print(Text(f"warning: trusted ssh_config of {hosts}: {setting}", "bold yellow"))
        shards = smooth_fleet(run_dir, fleet, config, progress=False if quiet else None)
        keys = dict.fromkeys(e["key"] for shard in shards for e in shard["entries"])
        merged = read_json(run_dir.file(SMOOTHING_FILE))["results"]  # every shard merged
        entries = [merged[k] for k in keys]
        console.print(table("fleet shards", ("device", "rows"), [(s["device"], f"{s['rows']}") for s in shards]))
    else:
        entries = smooth_run(run_dir, config, artifact=artifact, device=device, progress=False if quiet else None)
    radii_grid = entries[0]["summary"]["radii"]
    rows = []
    for e in entries:
        s, m = e["settings"], e["summary"]
        rows.append([f"{s['sigma']:g}", f"{s['runtime']} {s['precision']}", s["where"],
                     f"{len(e['points'])}/{e['points_total']}", f"{m['acr']:.3f}", m["abstained"],
                     *(f"{100 * a:.0f}" for a in m["certified_accuracy"]), f"{e['samples_per_s']:.3g}"])
    console.print(table(f"certified accuracy (%) at L2 radius r (n0={entries[0]['settings']['n0']}, "
                        f"n={entries[0]['settings']['n']}, α={entries[0]['settings']['alpha']:g})",
                        ["σ", "runtime", "where", "points", "ACR", "abst.", *(f"{r:g}" for r in radii_grid),
                         "samples/s"], rows))
    agreement = (read_json(run_dir.file(SMOOTHING_FILE)).get("agreement") or {})
    found = [a for e in entries for a in agreement.get(e["key"], [])]
    if found:
        console.print(table("host against device (same samples: least differing votes; other seeds: Fisher test)",
                            ("device entry", "host entry", "seed", "same prediction", "differing votes ≥", "verdict"),
                            [(a["device"], a["host"], "same" if a["same_seed"] else "different",
                              f"{a['same_prediction']}/{a['points']}", a["differing_at_least"],
                              {True: "pass", False: "[bold red]FAIL[/]", None: "reported"}[a["passed"]])
                             for a in found]))
    plot = certified_plot(entries, run_dir.file("figures") / "smoothing_certified.png")
    console.print(f"plot: {plot}")
    console.print(f"wrote [bold]{run_dir.file(SMOOTHING_FILE)}[/]")
