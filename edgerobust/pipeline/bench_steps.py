"""The pipeline's bench step: latency of the current model on the [bench] target's runtimes."""
from __future__ import annotations

from ..bench import bench_run
from ..bench.api import check_target_matches_host, choose_runtimes
from ..config import section
from ..devices import load_profile
from .context import PIPELINE_STEPS, PipelineContext


def check_bench(ctx: PipelineContext) -> None:
    """The target (one this machine can stand for), its precision and runtimes, before any step runs."""
    config = section(ctx.recipe, "bench")
    profile = load_profile(config.target)
    check_target_matches_host(profile)
    profile.require_precision(config.precision)
    choose_runtimes(profile, config.runtimes, config.precision)


@PIPELINE_STEPS.register("bench", "latency per runtime and batch size on this machine (RUN/bench.json)")
def bench_step(ctx: PipelineContext) -> None:
    record = bench_run(ctx.run, config=section(ctx.recipe, "bench"), progress=ctx.progress, device=ctx.device)
    for row in record["results"]:
        ctx.add("bench", f"{row['runtime']} batch {row['batch']} p50 ms", round(row["p50_ms"], 4))


bench_step.check = check_bench  # type: ignore[attr-defined]
