"""The pipeline's export step: the current model -> a verified bundle for the recipe's target (x86-cpu)."""
from __future__ import annotations

from ..config import section
from ..devices import load_profile
from ..export.api import export_plan, export_run
from ..export.bundle import verify_bundle
from .context import PIPELINE_STEPS, PipelineContext


def check_export(ctx: PipelineContext) -> None:
    """The target, its opset and the precisions asked for, before any step runs."""
    config = section(ctx.recipe, "export")
    export_plan(config.target, config.opset, config.fp16, config.int8)


@PIPELINE_STEPS.register("export", "export the current model for a target device and verify the bundle")
def export_step(ctx: PipelineContext) -> None:
    config = section(ctx.recipe, "export")
    profile = load_profile(config.target)
    result = export_run(ctx.run, config, out=ctx.out / f"export-{profile.name}", progress=ctx.progress,
                        device=ctx.device)
    verify_bundle(result.bundle, run_golden=True)
    ctx.add("export", "target", profile.name)
    ctx.add("export", "bundle", str(result.bundle))
    for precision, parity in result.summary["parity"].items():
        ctx.add("export", f"{precision} max |Δ| vs PyTorch", parity["max_abs_diff"])
        ctx.add("export", f"{precision} top-1 agreement", parity["top1_agreement"])


export_step.check = check_export  # type: ignore[attr-defined]
