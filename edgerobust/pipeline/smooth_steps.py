"""The pipeline's smooth step: randomized-smoothing certificates of the current model ([smooth], small n)."""
from __future__ import annotations

from ..config import section
from ..smoothing import SmoothConfig, smooth_run
from ..smoothing.api import check_runtime
from .context import PIPELINE_STEPS, PipelineContext


def check_smooth(ctx: PipelineContext) -> None:
    """The [smooth] settings and that its runtime runs here, before any step runs."""
    check_runtime(section(ctx.recipe, "smooth", SmoothConfig))


@PIPELINE_STEPS.register("smooth", "randomized smoothing: CERTIFY on the first test points (RUN/smoothing.json)")
def smooth_step(ctx: PipelineContext) -> None:
    for entry in smooth_run(ctx.run, section(ctx.recipe, "smooth", SmoothConfig), progress=ctx.progress):
        s, m = entry["settings"], entry["summary"]
        name = f"σ={s['sigma']:g} {s['runtime']}"
        ctx.add("smooth", f"{name} ACR", round(m["acr"], 4))
        ctx.add("smooth", f"{name} certified at r=0", round(m["certified_accuracy"][0], 4))


smooth_step.check = check_smooth  # type: ignore[attr-defined]
