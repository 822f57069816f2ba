"""The compress step: ADMM-prune the trained model with the recipe's [compress] settings; later steps use it."""
from __future__ import annotations

import shutil

from ..compress.api import CompressSetup, compress_model, configs_from_recipe
from ..errors import EdgeRobustError
from .context import PIPELINE_STEPS, PipelineContext
from .directory import made_by_pipeline


def check_compress(ctx: PipelineContext) -> None:
    """The pipeline compresses one model: a grid of keep ratios or training ε is refused before any step runs."""
    config, _, adv, _ = configs_from_recipe(ctx.recipe)
    for key, value in (("keep", config.keep), ("adversarial eps", adv.eps if adv else None)):
        if isinstance(value, list):
            raise EdgeRobustError(f"recipe {ctx.recipe.get('origin')}: [compress] {key} = {value} is a grid; the "
                                  "pipeline compresses one model, so give one value (`edgerobust compress` runs grids)")


@PIPELINE_STEPS.register("compress", "ADMM filter pruning with adversarial training, masked retrain, removal")
def compress_step(ctx: PipelineContext) -> None:
    config, train_config, adv, evaluate = configs_from_recipe(ctx.recipe)
    source = ctx.runs.get("train", ctx.run)
    out = ctx.out / "compressed"
    if (out / "model.json").is_file() and made_by_pipeline(ctx.out, out.name):  # its own earlier result
        shutil.rmtree(out)
    setup = CompressSetup(adversarial=adv, evaluate=evaluate or None, recipe=ctx.recipe, device=ctx.device)
    run = compress_model(source, out, config, train_config, setup, progress=ctx.progress)
    ctx.run = ctx.runs["compress"] = run
    totals = run.manifest["compression"]["stats"]["totals"]
    ctx.add("compress", "method", f"{config.method} {config.scheme} keep {config.keep:g}")
    ctx.add("compress", "parameters", f"{totals['params_before']:,} → {totals['params_after']:,}")
    ctx.add("compress", "FLOP reduction", round(totals["flop_reduction"], 2))
    ctx.add("compress", "clean test accuracy", run.manifest["metrics"]["test_accuracy"])
    evaluation = run.manifest["compression"].get("evaluation")
    if evaluation:
        dense, pruned = evaluation["rows"]
        key = f"pgd{dense['pgd_steps']}"
        ctx.add("compress", f"PGD-{dense['pgd_steps']} ε={dense['eps']:g} dense → pruned",
                f"{dense[key]:.3f} → {pruned[key]:.3f}")


compress_step.check = check_compress  # type: ignore[attr-defined]
