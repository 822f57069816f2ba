"""`--host` / `--hosts` for `bench` and `evaluate`: the same measurements on a device through the runner.

The options are defined once here and shared by both commands; the work is `edgerobust.remote`'s.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from ..config import DeviceConfig, given, option_help
from ..errors import EdgeRobustError
from ..remote.api import device_bench, device_replay
from ..remote.errors import RemoteError
from ..remote.fleet import load_fleet, run_fleet
from ..run import RunDir
from .common import console, err_console
from .render import table

D = functools.partial(option_help, DeviceConfig)
HOST = typer.Option(None, "--host", help="Measure on a device: user@host[:port], an ~/.ssh/config alias, or "
                                         "local[:PYTHON] (the runner in a subprocess).")
HOSTS = typer.Option(None, "--hosts", help="A fleet file (TOML): measure on every device in it, concurrently.")
PYTHON = typer.Option(None, "--python", help=D("python"))
SSH_CONFIG = typer.Option(None, "--ssh-config", help=D("ssh_config"))
DEVICE_DIR = typer.Option(None, "--device-dir", help=D("root"))
INSECURE = typer.Option(False, "--insecure-accept-any-host-key",
                        help="DANGEROUS: do not check the device's SSH host key (anyone in between can pose as it).")
TIMEOUT = typer.Option(None, "--timeout", help=D("timeout"))
MAX_CV = typer.Option(None, "--max-cv", help=D("max_cv"))
MAX_RISE = typer.Option(None, "--max-temp-rise", help=D("max_temperature_rise_c"))
REMEASURE = typer.Option(None, "--remeasure", help=D("remeasure"))
MAX_OUTPUT = typer.Option(None, "--max-output", help=D("max_output_mib"))
TRUST_SSH_CONFIG = typer.Option(False, "--trust-ssh-config",
                                help="With --hosts: accept an ssh_config named by the fleet file even if it runs "
                                     "local commands or changes host-key checks (its settings are shown).")


def on_device(host: str | None, hosts: Path | None) -> bool:
    """Whether the command measures on a device (--host or --hosts, never both) rather than on this machine."""
    if host and hosts:
        raise EdgeRobustError("give --host or --hosts, not both")
    return bool(host or hosts)


def reach_overrides(host: str | None, python: str | None, ssh_config: Path | None, device_dir: str | None,
                    insecure: bool, timeout: float | None, max_output: float | None = None) -> dict[str, Any]:
    """The --host options as overrides of DeviceConfig (None: not given), for `recipe_section`."""
    return dict(host=host, python=python, ssh_config=None if ssh_config is None else str(ssh_config),
                root=given(device_dir, "--device-dir"),
                insecure_host_key=given(insecure or None, "--insecure-accept-any-host-key"), timeout=timeout,
                max_output_mib=given(max_output, "--max-output"))


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
                         "" if s.get("gap") is None else f"{100 * s['gap']:+.2f} pt",
                         "" if s.get("diverge_from_reference") is None else str(s["diverge_from_reference"])))
    console.print(table(f"replay on {doc['host']} ({doc['settings']['runtime']}): host vs device accuracy",
                        ("precision", "set", "points", "host", "device", "gap (host − device)", "≠ fp32 (points)"),
                        rows))


def print_fleet(rows: list[dict[str, Any]]) -> None:
    lines = [(r["device"], r["host"], r["target"], Text("ok", "green") if r["status"] == "ok" else Text("error", "red"),
              r.get("file", "") if r["status"] == "ok" else f"{r['error']['kind']}: {r['error']['message']}")
             for r in rows]
    console.print(table("fleet", ("device", "host", "target", "status", "result"), lines))


def run_remote(kind: str, runs: list[Path], config: DeviceConfig, hosts: Path | None, quiet: bool,
               trust_ssh_config: bool = False) -> None:
    """Run `bench` or `replay` on one device (`config.host`) or a fleet (`hosts`, each device's fields over
    `config`; an ssh_config the fleet file names is refused when risky unless `trust_ssh_config`, and then shown);
    a failure keeps what was gathered and exits 2."""
    if trust_ssh_config and not hosts:
        raise EdgeRobustError("--trust-ssh-config applies to the ssh_config a fleet file names; give --hosts "
                              "(your own --ssh-config is yours and not checked)")
    if len(runs) != 1:
        raise EdgeRobustError("--host/--hosts measure one run at a time; give one run directory")
    run = RunDir.open(runs[0])
    if config.target is None:
        exports = list(run.manifest.get("export", {}))
        if len(exports) != 1:
            raise EdgeRobustError(f"run {run.path} has {'no export' if not exports else 'several exports'}; "
                                  "name the target with --target")
        config = replace(config, target=exports[0])
    if config.insecure_host_key:
        err_console.print("[bold yellow]warning:[/] --insecure-accept-any-host-key: the device's identity is NOT "
                          "checked; anyone on the network path can pose as it")
    if hosts:
        fleet = load_fleet(hosts, config, trust_ssh_config)
        for setting in fleet.trusted_ssh_settings:
            err_console.print(Text(f"warning: trusted ssh_config of {hosts}: {setting}", "bold yellow"))
        rows = run_fleet(run, fleet, kind, progress=False)
        print_fleet(rows)
        failed = [r for r in rows if r["status"] != "ok"]
        if failed:
            raise EdgeRobustError(f"{len(failed)} of {len(rows)} devices failed ({failed[0]['device']}: "
                                  f"{failed[0]['error']['message']}); the others' results are in {run.path}/device")
        return
    measure = device_bench if kind == "bench" else device_replay
    try:
        doc = measure(run, config, progress=False if quiet else None)
    except RemoteError as exc:
        if exc.partial and exc.partial.get("rows"):
            (print_bench if kind == "bench" else print_replay)(exc.partial)
        raise
    (print_bench if kind == "bench" else print_replay)(doc)
    console.print(f"{kind} on device: [bold]{run.path / 'device'}[/]")
