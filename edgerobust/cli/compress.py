"""`edgerobust compress`."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from ..compress.api import CompressSetup, compress_grid, configs_from_recipe
from ..config import CompressEvaluateConfig, given, section
from ..errors import EdgeRobustError
from ..recipe import load_recipe
from ..report.tradeoff import tradeoff_columns, tradeoff_table_rows
from ..run import RunDir
from ..training.distributed import is_main_process
from . import options as opts
from .common import command, console, device_option, parse_kwargs, split_list
from .render import table


@command
def compress(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Run directory of a trained model, or a model "
                                        "spec to train from scratch first (e.g. resnet34)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Dataset (default: the source run's)."),
    out: Path = opts.out_option("runs/compress"),
    recipe: str = opts.recipe_option("digits-compress"),
    method: Optional[str] = typer.Option(None, help="admm, l1 (one-shot L1 filter pruning) or magnitude."),
    scheme: Optional[str] = typer.Option(None, help="irregular, filter, column or channel."),
    keep: Optional[str] = typer.Option(None, help="Fraction of weights / filters kept, e.g. 0.5 or 25%; a comma "
                                       "list runs each."),
    global_keep: Optional[bool] = typer.Option(None, "--global/--per-layer", help="One ranking across layers."),
    funnel: Optional[bool] = typer.Option(None, "--funnel/--no-funnel", help="Density falling with depth."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layer names or patterns to prune."),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="Kept channels per layer rounded to a multiple "
                                           "of this, at least it (16 suits onnxruntime's x86 int8/fp32 kernels)."),
    threshold: Optional[float] = typer.Option(None, help="L1 method: drop filters whose L1 norm is below this."),
    admm_epochs: Optional[int] = typer.Option(None, "--admm-epochs", help="Epochs of ADMM training."),
    retrain_epochs: Optional[int] = typer.Option(None, "--retrain-epochs", help="Masked retraining epochs."),
    rho: Optional[float] = typer.Option(None, help="ADMM penalty ρ at the start."),
    rho_growth: Optional[float] = typer.Option(None, "--rho-growth", help="ρ multiplier at each z/u update."),
    admm_interval: Optional[int] = typer.Option(None, "--admm-interval", help="Epochs between z/u updates."),
    keep_schedule: Optional[str] = typer.Option(None, "--keep-schedule", help="How the keep ratio ADMM projects "
                                                "onto falls to --keep: constant, linear or staged (Marshall)."),
    adv: Optional[str] = typer.Option(None, help="Adversarial loss: none, pgd, fgsm-rs or trades."),
    eps: Optional[str] = typer.Option(None, help="Training ε in pixels, e.g. 8/255 or 0.1; a comma list runs each."),
    steps: Optional[int] = typer.Option(None, help="Attack steps of the adversarial loss."),
    adv_weight: Optional[float] = typer.Option(None, "--adv-weight", help="w of w·CE(x_adv) + (1−w)·CE(x)."),
    eps_schedule: Optional[str] = typer.Option(None, "--eps-schedule", help="constant, linear or staged."),
    loss: Optional[str] = typer.Option(None, "--loss", help="Training loss of every stage by name ([train] loss; see "
                                       "`edgerobust losses`), e.g. gaussian or macer for a smoothed model."),
    loss_options: Optional[str] = typer.Option(None, "--loss-options", help="The loss's own settings as JSON "
                                               "([train] loss_options)."),
    qat: Optional[bool] = typer.Option(None, "--qat/--no-qat", help="Quantization-aware masked retraining: the "
                                       "pruned model trains through the int8 export's fake quantization."),
    epochs: Optional[int] = typer.Option(None, help="Pretraining epochs when --model is a spec."),
    lr: Optional[float] = typer.Option(None, help="Learning rate."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    seed: Optional[int] = typer.Option(None),
    physical: Optional[bool] = typer.Option(None, "--physical/--masked-only", help="Remove pruned channels."),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Clean and PGD accuracy, dense vs pruned."),
    suite: Optional[bool] = typer.Option(None, "--suite/--no-suite", help="Also the standard attack suite."),
    data_root: Optional[Path] = opts.DATA_ROOT,
    resume: bool = typer.Option(False, "--resume", help="Continue a killed compression."),
    device: str = device_option(),
    quiet: bool = opts.quiet_option("No progress bars."),
) -> None:
    """Prune a model (ADMM / L1 filter), adversarially if asked, and remove the pruned filters physically."""
    spec = load_recipe(recipe)
    config, train_config, adv_settings, eval_settings = configs_from_recipe(spec, dict(
        method=method, scheme=scheme, global_keep=given(global_keep, "--global/--per-layer"), funnel=funnel,
        threshold=threshold, round_to=round_to,
        keep=split_list(keep), layers=split_list(layers),
        admm_epochs=admm_epochs, retrain_epochs=retrain_epochs, rho=rho, rho_growth=rho_growth,
        admm_interval=admm_interval, keep_schedule=keep_schedule,
        physical=given(physical, "--physical/--masked-only"), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        loss=loss, loss_options=parse_kwargs(loss_options, "--loss-options"), qat=qat,
        adv_method=given(adv, "--adv"), adv_eps=split_list(eps), adv_steps=steps,
        adv_weight=given(adv_weight, "--adv-weight"), adv_schedule=given(eps_schedule, "--eps-schedule")))
    if evaluate:
        eval_settings = eval_settings or CompressEvaluateConfig()
        if suite is not None:
            eval_settings = replace(eval_settings, suite=suite)
    if model is None and "model" not in spec:
        raise EdgeRobustError("pass --model (a run directory or a model spec) or use a recipe with a [model] spec")
    model_section, data_section = section(spec, "model"), section(spec, "data")
    source = model or model_section.spec
    from_run = Path(source).is_dir()  # a trained run keeps the dataset it recorded unless --data says otherwise
    name = data or (data_section.name if "data" in spec and not from_run else None)
    setup = CompressSetup(adversarial=adv_settings, evaluate=eval_settings if evaluate else None, data=name,
                          data_root=data_root or (None if from_run and not data else data_section.root),
                          data_options=data_section.options if name == data_section.name else None,
                          model_options=model_section.options() if source == model_section.spec else None,
                          resume=resume, recipe=spec, device=device)
    runs, rows = compress_grid(source, out, config, train_config, setup, progress=False if quiet else None)
    if not is_main_process():
        return
    for run in runs:
        print_compression_summary(run)
    if rows:
        console.print(table("trade-off (accuracy %)", tradeoff_columns(rows), tradeoff_table_rows(rows)))
    for run in runs:
        console.print(f"run directory: [bold]{run.path}[/]")


def print_compression_summary(run: RunDir) -> None:
    comp = run.manifest["compression"]
    rows = [(r["layer"], "x".join(map(str, r["shape_before"])) + " → " + "x".join(map(str, r["shape_after"])),
             r["density"], r["params_before"], r["params_after"], r["flops_before"], r["flops_after"])
            for r in comp["stats"]["layers"]]
    t = comp["stats"]["totals"]
    rows.append(("total", "", t["density"], t["params_before"], t["params_after"], t["flops_before"],
                 t["flops_after"]))
    cfg = comp["config"]
    console.print(table(f"{cfg['method']} · {cfg['scheme']} · keep {cfg['keep']:g} ({run.path.name})",
                        ("layer", "shape", "density", "params before", "params after", "FLOPs before",
                         "FLOPs after"), rows))
