"""The pipeline's bench step: latency of the current model on the [bench] target's runtimes."""
from __future__ import annotations

from dataclasses import replace

from ..bench.api import bench_plan, bench_precisions
from ..config import section
from .context import PIPELINE_STEPS, PipelineContext


def check_bench(ctx: PipelineContext) -> None:
    """The target (one this machine can stand for), its precision and runtimes, before any step runs."""
    config = section(ctx.recipe, "bench")
    bench_plan(config.target, config.precision, config.runtimes)


def exported_precisions(ctx: PipelineContext, target: str, first: str) -> list[str]:
    """[bench] precision, then every other precision the export step made for the same target (int8 on x86-cpu),
    so their rows stand side by side."""
    from ..devices import load_profile

    name = load_profile(target).name
    made = ((ctx.run.manifest.get("export") or {}).get(name) or {}).get("precisions") or []
    return [first, *(p for p in made if p != first)]


@PIPELINE_STEPS.register("bench", "latency per runtime, precision and batch size on this machine (RUN/bench.json)")
def bench_step(ctx: PipelineContext) -> None:
    config = section(ctx.recipe, "bench")
    config = replace(config, precisions=config.precisions or exported_precisions(ctx, config.target, config.precision))
    record = bench_precisions(ctx.run, config, progress=ctx.progress, device=ctx.device)
    several = len(config.chosen_precisions) > 1
    for row in record["results"]:
        label = f"{row['runtime']} {row['precision']}" if several else row["runtime"]
        ctx.add("bench", f"{label} batch {row['batch']} p50 ms", round(row["p50_ms"], 4))


bench_step.check = check_bench  # type: ignore[attr-defined]
