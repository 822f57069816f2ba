"""The report's latency section: how it was measured, the figures per runtime and batch, and two plots."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import EdgeRobustError
from ..io import read_json
from ..run import RunDir
from .plots import new_figure, save_figure
from .sections import md_table, register_section


def latency_plot(record: dict, path: Path) -> Path:
    """p50 per runtime at each batch size; the whisker runs from p50 up to p99."""
    by_runtime = defaultdict(dict)
    for r in record["results"]:
        by_runtime[_label(r, record)][r["batch"]] = r
    batches = sorted({r["batch"] for r in record["results"]})
    fig, ax = new_figure(7, 4)
    width = 0.8 / max(len(by_runtime), 1)
    x = np.arange(len(batches))
    for i, (runtime, rows) in enumerate(sorted(by_runtime.items())):
        p50 = [rows[b]["p50_ms"] if b in rows else np.nan for b in batches]
        up = [rows[b]["p99_ms"] - rows[b]["p50_ms"] if b in rows else 0 for b in batches]
        ax.bar(x + i * width, p50, width, yerr=[np.zeros(len(batches)), up], capsize=3, label=runtime)
    ax.set_xticks(x + width * (len(by_runtime) - 1) / 2, [str(b) for b in batches])
    ax.set(xlabel="batch size", ylabel="latency per batch (ms, p50; whisker to p99)", yscale="log",
           title=f"{record['model']['spec']} latency per runtime ({record['target']['name']})")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def throughput_plot(record: dict, path: Path) -> Path:
    fig, ax = new_figure(6, 4)
    by_runtime = defaultdict(list)
    for r in record["results"]:
        by_runtime[_label(r, record)].append((r["batch"], r["throughput_ips"]))
    for runtime, points in sorted(by_runtime.items()):
        points.sort()
        ax.plot([b for b, _ in points], [t for _, t in points], marker="o", label=runtime)
    ax.set(xlabel="batch size", ylabel="images / s (batch / mean latency)", xscale="log", yscale="log",
           title=f"{record['model']['spec']} throughput against batch size")
    ax.set_xscale("log", base=2)
    batches = sorted({r["batch"] for r in record["results"]})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def _label(row: dict, record: dict) -> str:
    """The runtime, with its precision when the record holds several (`bench --precision fp32,int8`)."""
    return f"{row['runtime']} {row.get('precision', '')}".strip() if len(record.get("precisions") or []) > 1 \
        else row["runtime"]


@register_section("bench", "latency per runtime and batch size, throughput, GFLOP/s against the GEMM ceiling")
def bench_section(run: RunDir, figures: Path) -> str | None:
    entry = run.manifest.get("bench")
    path = run.file(entry.get("file", "bench.json")) if entry else None
    if not path or not path.is_file():
        return None
    try:
        record = read_json(path)
    except EdgeRobustError as exc:
        return f"## Latency\n\n**{exc}**\n"
    host, target = record["host"], record["target"]
    ceilings = "; ".join(f"{d}: {c['gflops']:.1f} GFLOP/s ({c['method']})" for d, c in record["ceilings"].items())
    lines = ["## Latency", "",
             f"Measured on this {host['machine']} machine ({host['logical_cpus']} logical CPUs) for target "
             f"`{target['name']}`: mode **{record['mode']}** ({record['mode_help']}), "
             f"{', '.join(record.get('precisions') or [record['precision']])}, "
             f"{record['threads']} threads, {record['warmup']} warm-up and {record['repeats']} timed calls per row, "
             f"inputs: {record['input']}. ONNX: {record['onnx_source']}. Machine GEMM ceiling: {ceilings}. "
             f"Load average before/after: {record['load_average_before'][0]:.1f} / "
             f"{record['load_average_after'][0]:.1f}.", ""]
    rows = [(r["runtime"], r.get("precision", record["precision"]), r["runtime_version"], r["batch"], r["p50_ms"],
             r["p90_ms"], r["p99_ms"],
             f"{r['mean_ms']:.4g} ± {r['std_ms']:.2g}", r["throughput_ips"], r["achieved_gflops"],
             f"{100 * r['ceiling_fraction']:.3g}%" if r.get("ceiling_fraction") else "",
             f"{r['memory']['peak_rss_bytes'] / 2**20:.0f}" if r.get("memory") else "")
            for r in record["results"]]
    lines += [md_table(("runtime", "precision", "version", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms",
                        "images/s", "GFLOP/s", "of ceiling", "peak RSS MiB"), rows), ""]
    model = record["model"]
    lines += [f"Model: {model['parameters']:,} parameters, {model['flops_per_image']:,} FLOPs per image (counted), "
              f"{model['weight_bytes']:,} weight bytes.", ""]
    parity = record.get("parity", {})
    if parity:
        lines += ["Sanity check against PyTorch eager fp32 on the same inputs: " + "; ".join(
            f"{n} max |Δ| {p['max_abs_diff_vs_torch_cpu']:.2g}, top-1 agreement {p['top1_agreement']:.3f}"
            for n, p in parity.items()) + ".", ""]
    if record.get("skipped_runtimes"):
        lines += ["Not measured: " + "; ".join(f"{n} ({why})" for n, why in record["skipped_runtimes"].items()) + ".",
                  ""]
    if record["mode"] == "latency" and record["results"]:
        latency = latency_plot(record, figures / "bench_latency.png")
        throughput = throughput_plot(record, figures / "bench_throughput.png")
        lines += [f"![latency per runtime]({latency.relative_to(run.path)})",
                  f"![throughput against batch size]({throughput.relative_to(run.path)})", ""]
    return "\n".join(lines)
