"""The pipeline's bench step: latency of the current model on the [bench] target's runtimes."""
from __future__ import annotations

from ..bench import bench_run
from ..recipe import section
from .context import PIPELINE_STEPS, PipelineContext

BENCH_KEYS = {"target", "runtimes", "batches", "repeats", "warmup", "mode", "precision", "threads", "memory"}


@PIPELINE_STEPS.register("bench", "latency per runtime and batch size on this machine (RUN/bench.json)")
def bench_step(ctx: PipelineContext) -> None:
    settings = section(ctx.recipe, "bench", BENCH_KEYS)
    record = bench_run(ctx.run, settings.get("target", "x86-cpu"), settings.get("runtimes"),
                       settings.get("batches", [1, 32]), settings.get("mode", "latency"), settings.get("repeats", 30),
                       settings.get("warmup", 5), settings.get("precision", "fp32"), settings.get("threads"),
                       settings.get("memory", True), progress=ctx.progress, device=ctx.device)
    for row in record["results"]:
        ctx.add("bench", f"{row['runtime']} batch {row['batch']} p50 ms", round(row["p50_ms"], 4))
