"""`--host` / `--hosts` for `bench` and `evaluate`: the same measurements on a device through the runner.

The options are defined once here and shared by both commands; the work is `edgerobust.remote`'s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from ..errors import EdgeRobustError
from ..remote.api import device_bench, device_replay
from ..remote.errors import RemoteError
from ..remote.fleet import load_fleet, run_fleet
from ..remote.options import RemoteOptions
from ..run import RunDir
from .common import console, err_console
from .render import table

HOST = typer.Option(None, "--host", help="Measure on a device: user@host[:port], an ~/.ssh/config alias, or "
                                         "local[:PYTHON] (the runner in a subprocess).")
HOSTS = typer.Option(None, "--hosts", help="A fleet file (TOML): measure on every device in it, concurrently.")
PYTHON = typer.Option(None, "--python", help="The Python on the device (default python3).")
SSH_CONFIG = typer.Option(None, "--ssh-config", help="An ssh_config file for ssh -F (default: your own).")
DEVICE_DIR = typer.Option(None, "--device-dir", help="Work directory on the device (default: .cache/edgerobust-device "
                          "under the login directory over SSH; ~/.cache/edgerobust/local-device for local).")
INSECURE = typer.Option(False, "--insecure-accept-any-host-key",
                        help="DANGEROUS: do not check the device's SSH host key (anyone in between can pose as it).")
TIMEOUT = typer.Option(600.0, "--timeout", help="Seconds one runner command may take on the device.")
MAX_CV = typer.Option(None, "--max-cv", help="Re-measure a device row whose coefficient of variation exceeds this "
                                             "(default: the profile's stability.max_cv or 0.1).")
MAX_RISE = typer.Option(None, "--max-temp-rise", help="Re-measure a device row whose temperature rises more (°C; "
                                                      "default: the profile's stability.max_temperature_rise_c or 5).")
REMEASURE = typer.Option(None, "--remeasure", help="Extra attempts for a noisy device row before it is flagged "
                                                   "(default: the profile's stability.remeasure or 2).")


def remote_options(host: str, python: str | None, ssh_config: Path | None, device_dir: str | None,
                   insecure: bool, timeout: float) -> RemoteOptions:
    if insecure:
        err_console.print("[bold yellow]warning:[/] --insecure-accept-any-host-key: the device's identity is NOT "
                          "checked; anyone on the network path can pose as it")
    return RemoteOptions(host, python=python, root=device_dir, ssh_config=str(ssh_config) if ssh_config else None,
                         insecure_host_key=insecure, timeout=timeout)


def _fmt(ms: float) -> str:
    return f"{ms:.3g}"


def print_bench(doc: dict[str, Any]) -> None:
    rows = [(r["record"]["precision"], r["record"]["batch"], _fmt(r["compute"]["p50_ms"]),
             _fmt(r["compute"]["p99_ms"]), f"{r['compute']['cv']:.3f}", _fmt(r["end_to_end"]["p50_ms"]),
             f"{r['compute']['throughput_per_s']:.4g}", len(r["attempts"]), r["flag"] or "")
            for r in doc["rows"]]
    info = doc["device"]["info"]
    machine, jetson = info.get("machine", {}), info.get("jetson") or {}
    mode = (jetson.get("power_mode") or {}).get("name")
    s = doc["settings"]
    title = (f"on {doc['host']} ({machine.get('architecture')}, {jetson.get('model') or machine.get('cpu_model')}"
             f"{', power mode ' + mode if mode else ''}"
             f"{', EMULATED: timings are not latencies' if doc.get('emulated') else ''}): {s['runtime']}, "
             f"{s['threads']} threads, {s['warmup']} "
             f"warm-up, {s['repeats']} repeats (ms; record per row in the run's device/ files)")
    console.print(table(title, ("precision", "batch", "p50", "p99", "cv", "end-to-end p50", "img/s", "runs", "flag"),
                        rows))
    t = doc["device"]["transfer"] or {}
    console.print(f"[dim]copied: runner {'yes' if t.get('runner_copied') else 'no (already there)'}, bundle "
                  f"{'yes' if t.get('bundle_copied') else 'no (same hash already there)'}[/]")


def print_replay(doc: dict[str, Any]) -> None:
    rows = []
    for r in doc["rows"]:
        for key, s in r["sets"].items():
            host = s.get("host_accuracy")
            rows.append((r["precision"], key, s["count"], "" if host is None else f"{host:.2%}", f"{s['accuracy']:.2%}",
                         "" if s.get("gap") is None else f"{100 * s['gap']:+.2f} pt"))
    console.print(table(f"replay on {doc['host']} ({doc['settings']['runtime']}): host vs device accuracy",
                        ("precision", "set", "points", "host", "device", "gap (host − device)"), rows))


def print_fleet(rows: list[dict[str, Any]]) -> None:
    lines = [(r["device"], r["host"], r["target"], Text("ok", "green") if r["status"] == "ok" else Text("error", "red"),
              r.get("file", "") if r["status"] == "ok" else f"{r['error']['kind']}: {r['error']['message']}")
             for r in rows]
    console.print(table("fleet", ("device", "host", "target", "status", "result"), lines))


def run_remote(kind: str, runs: list[Path], target: str | None, host: str | None, hosts: Path | None,
               options: dict[str, Any], settings: dict[str, Any], quiet: bool) -> None:
    """Run `bench` or `replay` on one device or a fleet; a failure keeps what was gathered and exits 2."""
    if host and hosts:
        raise EdgeRobustError("give --host or --hosts, not both")
    if len(runs) != 1:
        raise EdgeRobustError("--host/--hosts measure one run at a time; give one run directory")
    run = RunDir.open(runs[0])
    if target is None:
        exports = list(run.manifest.get("export", {}))
        if len(exports) != 1:
            raise EdgeRobustError(f"run {run.path} has {'no export' if not exports else 'several exports'}; "
                                  "name the target with --target")
        target = exports[0]
    progress = False if quiet else None
    if hosts:
        fleet = load_fleet(hosts, options["ssh_config"], options["insecure"])
        rows = run_fleet(run, fleet, kind, target, progress=False, **settings)
        print_fleet(rows)
        failed = [r for r in rows if r["status"] != "ok"]
        if failed:
            raise EdgeRobustError(f"{len(failed)} of {len(rows)} devices failed ({failed[0]['device']}: "
                                  f"{failed[0]['error']['message']}); the others' results are in {run.path}/device")
        return
    remote = remote_options(host, **options)
    measure = device_bench if kind == "bench" else device_replay
    try:
        doc = measure(run, target, remote, progress=progress, **settings)
    except RemoteError as exc:
        if exc.partial and exc.partial.get("rows"):
            (print_bench if kind == "bench" else print_replay)(exc.partial)
        raise
    (print_bench if kind == "bench" else print_replay)(doc)
    console.print(f"{kind} on device: [bold]{run.path / 'device'}[/]")

