"""The foundation's steps: train, clean evaluation, report."""
from __future__ import annotations

from ..compute_device import resolve_device
from ..config import section
from ..data import load_dataset
from ..report import render_report
from ..training import evaluate_clean
from ..training.api import TrainSetup, adversarial_from_recipe, config_from_recipe, train_model
from .context import PIPELINE_STEPS, PipelineContext


@PIPELINE_STEPS.register("train", "train the recipe's model on its dataset (adversarially if it has [adversarial])")
def train_step(ctx: PipelineContext) -> None:
    model_section = section(ctx.recipe, "model")
    model = model_section.spec
    data = section(ctx.recipe, "data")
    adversarial = adversarial_from_recipe(ctx.recipe)
    run = train_model(ctx.out / "model", model, data.name, config_from_recipe(ctx.recipe),
                      TrainSetup(data_root=data.root, data_options=data.options, recipe=ctx.recipe,
                                 adversarial=adversarial, device=ctx.device, model_options=model_section.options()),
                      progress=ctx.progress)
    ctx.run = ctx.runs["train"] = run
    ctx.add("train", "model", model)
    loss = run.manifest["training"]["loss"]
    if loss.get("schedule"):
        final = run.manifest["training"]["history"][-1]
        ctx.add("train", "adversarial training", f"{loss['name']} ε={loss['schedule']['eps']:g} "
                                                 f"({loss['schedule']['kind']})")
        ctx.add("train", "train adversarial accuracy", final.get("train_adv_accuracy"))
    ctx.add("train", "parameters", run.manifest["metrics"]["parameters"])
    ctx.add("train", "clean test accuracy", run.manifest["metrics"]["test_accuracy"])


@PIPELINE_STEPS.register("clean-eval", "clean accuracy of the current model on the test split")
def clean_eval_step(ctx: PipelineContext) -> None:
    data = section(ctx.recipe, "data")
    test = load_dataset(data.name, "test", data.root, **data.options)
    metrics = evaluate_clean(ctx.run.load_model().to(resolve_device(ctx.device)), test)
    ctx.add("clean-eval", "test accuracy", metrics["accuracy"])


@PIPELINE_STEPS.register("report", "render the run report (Markdown + PNG plots)")
def report_step(ctx: PipelineContext) -> None:
    path = render_report(ctx.run)
    ctx.add("report", "report", str(path))
