"""The pipeline's bench step: latency of the current model on the [bench] target's runtimes."""
from __future__ import annotations

from ..bench import bench_run
from ..bench.api import bench_plan
from ..config import section
from .context import PIPELINE_STEPS, PipelineContext


def check_bench(ctx: PipelineContext) -> None:
    """The target (one this machine can stand for), its precision and runtimes, before any step runs."""
    config = section(ctx.recipe, "bench")
    bench_plan(config.target, config.precision, config.runtimes)


@PIPELINE_STEPS.register("bench", "latency per runtime and batch size on this machine (RUN/bench.json)")
def bench_step(ctx: PipelineContext) -> None:
    record = bench_run(ctx.run, section(ctx.recipe, "bench"), progress=ctx.progress, device=ctx.device)
    for row in record["results"]:
        ctx.add("bench", f"{row['runtime']} batch {row['batch']} p50 ms", round(row["p50_ms"], 4))


bench_step.check = check_bench  # type: ignore[attr-defined]
