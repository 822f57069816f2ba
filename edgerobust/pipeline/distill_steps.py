"""The pipeline's distill step: a small student from the current (compressed, robust) model, in its own run
(OUT/student/model), then exported, benched and replayed on the device like the main model when the pipeline has
those steps (OUT/student/export-TARGET, OUT/student/device-work), and reported (Barmpas, ch. 4)."""
from __future__ import annotations

from dataclasses import replace

from ..config import section
from ..distill import distill_model
from ..errors import EdgeRobustError
from ..models import ModelSpec
from .context import PIPELINE_STEPS, PipelineContext

DEPLOY_STEPS = ("export", "bench", "device")  # run for the student after the step, in this order, when listed


def check_distill(ctx: PipelineContext) -> None:
    config = section(ctx.recipe, "distill").check()
    ModelSpec.parse(config.student)  # an unknown student model fails before any step runs
    if config.temperatures:
        raise EdgeRobustError("[distill] temperatures: the pipeline distils one student; run a sweep with "
                              "`edgerobust distill --sweep`")


@PIPELINE_STEPS.register("distill", "distil the current model into a small student (own run, export, bench, device)")
def distill_step(ctx: PipelineContext) -> None:
    if ctx.run is None:
        raise EdgeRobustError("the distill step needs a model: run train (and compress) before it")
    config = section(ctx.recipe, "distill")
    work = ctx.out / "student"
    student = distill_model(work / "model", ctx.run, config, section(ctx.recipe, "train").validate(),
                            device=ctx.device, progress=ctx.progress, recipe=ctx.recipe)
    d = student.manifest["distillation"]
    ctx.add("distill", "student", f"{student.manifest['model']['spec']} ({config.method})")
    ctx.add("distill", "parameters student / teacher",
            f"{student.manifest['metrics']['parameters']} / {d['teacher']['parameters']}")
    ctx.add("distill", "clean accuracy student / teacher",
            f"{d['student']['clean_accuracy']:.4f} / {d['teacher']['clean_accuracy']:.4f}")
    ctx.add("distill", f"{d['student']['attack']} accuracy student / teacher",
            f"{d['student']['robust_accuracy']:.4f} / {d['teacher']['robust_accuracy']:.4f}")
    ctx.add("distill", "agreement with the teacher", round(d["test_agreement"], 4))
    sub = replace(ctx, out=work, run=student, runs={}, summary=[], steps=[])
    for name in (s for s in DEPLOY_STEPS if s in ctx.steps):
        PIPELINE_STEPS.get(name)(sub)
    for step, what, value in sub.summary:
        ctx.add("distill", f"student {step}: {what}", value)
    ctx.runs["distill"] = student
    if "report" in ctx.steps:
        from ..report import render_report

        ctx.add("distill", "student report", str(render_report(student)))


distill_step.check = check_distill  # type: ignore[attr-defined]
