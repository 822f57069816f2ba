"""`edgerobust bench`: latency of one or more runs' models on this machine's runtimes, as a table and bench.json."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.markup import escape

from ..bench import MODES, runtime_table
from ..bench.api import bench_precisions
from ..config import BenchConfig, given, option_help
from ..errors import EdgeRobustError
from ..runner.precisions import PRECISIONS
from . import options as opts
from . import remote as remote_cmd
from .common import RECIPE_HELP, command, console, device_option, err_console, recipe_section
from .defaults import RUN_HELP, TARGET_HELP, runs_argument
from .render import table


def parse_int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise EdgeRobustError(f"{name} '{text}' must be comma-separated integers, e.g. 1,8,32") from None
    if not values or min(values) < 1:
        raise EdgeRobustError(f"{name} '{text}' must list positive integers, e.g. 1,8,32")
    return values


def print_runtimes() -> None:
    rows = [(r["name"], r["device"], r["input"], " ".join(r["precisions"]), "yes" if r["available"] else "no",
             r["version"] or "", escape(r["reason"])) for r in runtime_table()]
    console.print(table("runtimes on this machine", ("runtime", "device", "input", "precisions", "available", "version",
                                                     "why not"), rows))


def fmt_ms(ms: float) -> str:
    if ms < 1:
        return f"{ms * 1e3:.3g}µs"
    return f"{ms:.3g}ms" if ms < 1e3 else f"{ms / 1e3:.3g}s"


def fmt_rate(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def results_table(records: list[dict]):
    several = len({r["model"]["spec"] for r in records}) > 1
    precisions = list(dict.fromkeys(p for record in records for p in record.get("precisions") or [record["precision"]]))
    rows = []
    for record in records:
        for r in record["results"]:
            fraction = r["ceiling_fraction"]
            name = f"{r['runtime']} {r['precision']}" if len(precisions) > 1 else r["runtime"]
            row = (name, r["batch"], fmt_ms(r["p50_ms"]), fmt_ms(r["p90_ms"]), fmt_ms(r["p99_ms"]),
                   fmt_ms(r["mean_ms"]), fmt_rate(r["throughput_ips"]),
                   f"{r['achieved_gflops']:.3g}", f"{100 * fraction:.3g}%" if fraction else "")
            rows.append((record["model"]["spec"], *row) if several else row)
    first = records[0]
    title = (f"{first['mode']} on this {first['host']['machine']} machine for target {first['target']['name']}"
             f"{'' if several else ': ' + first['model']['spec']} ({', '.join(precisions)}, {first['threads']} "
             "threads, "
             f"{first['warmup']} warm-up, {first['repeats']} repeats; std, memory and more in bench.json)")
    columns = ("runtime", "batch", "p50", "p90", "p99", "mean", "img/s", "GFLOP/s", "of peak")
    out = table(title, ("model", *columns) if several else columns, rows)
    out.box, out.pad_edge = box.SIMPLE_HEAD, False  # no vertical rules: the table fits an 80-column terminal
    for column in out.columns[:2 if several else 1]:
        column.no_wrap = True
    return out


H = functools.partial(option_help, BenchConfig)


@command
def bench(
    runs: Optional[list[Path]] = typer.Argument(None, help="Run directories (several compare models). " + RUN_HELP),
    target: Optional[str] = typer.Option(None, "--target", "-t", help=H("target", TARGET_HELP.rstrip("."))),
    runtime: Optional[list[str]] = typer.Option(None, "--runtime", help="Runtime(s), e.g. ort-cpu,torch-cpu "
                                                "(default: the target's runtimes available here)."),
    batch: Optional[str] = typer.Option(None, "--batch", "-b", help=H("batches", "Batch sizes, comma-separated")),
    repeats: Optional[int] = typer.Option(None, "--repeats", help=H("repeats")),
    warmup: Optional[int] = typer.Option(None, "--warmup", help=H("warmup")),
    mode: Optional[str] = typer.Option(None, "--mode", help=H("mode", f"One of: {', '.join(MODES.names())}")),
    precision: Optional[str] = typer.Option(None, "--precision", help=H("precision", f"One of {', '.join(PRECISIONS)}"
                                                                                  " (where the target and runtime "
                                                                                  "allow; on a device every precision "
                                                                                  "of the bundle)")),
    threads: Optional[int] = typer.Option(None, "--threads", help=H("threads")),
    memory: Optional[bool] = typer.Option(None, "--memory/--no-memory", help=H("memory")),
    recipe: Optional[str] = opts.recipe_option(help=RECIPE_HELP.format(
        section="[bench] (with --host/--hosts: [device])")),
    list_runtimes: bool = typer.Option(False, "--list-runtimes", help="List runtimes and why any cannot run here."),
    device: str = device_option(),
    quiet: bool = opts.quiet_option(),
    host: Optional[str] = remote_cmd.HOST, hosts: Optional[Path] = remote_cmd.HOSTS,
    python: Optional[str] = remote_cmd.PYTHON, ssh_config: Optional[Path] = remote_cmd.SSH_CONFIG,
    device_dir: Optional[str] = remote_cmd.DEVICE_DIR, insecure: bool = remote_cmd.INSECURE,
    timeout: Optional[float] = remote_cmd.TIMEOUT, max_cv: Optional[float] = remote_cmd.MAX_CV,
    max_temp_rise: Optional[float] = remote_cmd.MAX_RISE, remeasure: Optional[int] = remote_cmd.REMEASURE,
    trust_ssh_config: bool = remote_cmd.TRUST_SSH_CONFIG,
    max_output: Optional[float] = remote_cmd.MAX_OUTPUT,
) -> None:
    """Time a run's model per runtime and batch size (p50/p90/p99, throughput, GFLOP/s, memory) into RUN/bench.json."""
    if list_runtimes:
        print_runtimes()
        return
    names = [n.strip() for item in (runtime or []) for n in item.split(",") if n.strip()] or None
    batches = given(parse_int_list(batch, "--batch") if batch is not None else None, "--batch")
    chosen = [p.strip() for p in precision.split(",") if p.strip()] if precision else None
    if remote_cmd.on_device(host, hosts):  # on a device, through the runner (edgerobust.remote)
        config = recipe_section(recipe, "device", dict(
            **remote_cmd.reach_overrides(host, python, ssh_config, device_dir, insecure, timeout, max_output),
            target=target,
            precisions=given(chosen, "--precision"), batches=batches, threads=threads,
            runtime=given(names[0] if names else None, "--runtime"), warmup=warmup, repeats=repeats, max_cv=max_cv,
            max_temperature_rise_c=given(max_temp_rise, "--max-temp-rise"), remeasure=remeasure))
        return remote_cmd.run_remote("bench", runs_argument(runs, config.target), config, hosts, quiet,
                                     trust_ssh_config)
    config = recipe_section(recipe, "bench", dict(
        target=target, runtimes=given(names, "--runtime"), batches=batches, mode=mode, repeats=repeats,
        warmup=warmup, precision=given(chosen[0] if chosen else None, "--precision"),
        precisions=given(chosen if chosen and len(chosen) > 1 else None, "--precision"), threads=threads,
        memory=memory))
    runs = runs_argument(runs, config.target)
    records = [bench_precisions(run, config, progress=False if quiet else None, device=device) for run in runs]
    console.print(results_table(records))
    first = records[0]
    for device, ceiling in first["ceilings"].items():
        console.print(f"{device} peak = measured GEMM ceiling: {ceiling['gflops']:.1f} GFLOP/s ({ceiling['method']})")
    busy = max(first["load_average_before"][0], first["load_average_after"][0])
    if busy > first["host"]["logical_cpus"]:
        err_console.print(f"[yellow]warning:[/] load average {busy:.1f} on {first['host']['logical_cpus']} CPUs: "
                          "other processes share the cores, so these timings include contention "
                          "(multi-threaded runtimes suffer most; --threads 1 is steadier on a shared machine)")
    for name, reason in first["skipped_runtimes"].items():
        err_console.print(f"[dim]skipped {name}: {escape(reason)}[/]", highlight=False)
    for record in records:
        console.print(f"bench: [bold]{Path(record['run']) / 'bench.json'}[/]")
