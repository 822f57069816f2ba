"""`edgerobust train`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..config import given, section
from ..errors import EdgeRobustError
from ..recipe import load_recipe
from ..training.api import TrainSetup, adversarial_from_recipe, config_from_recipe, train_model
from . import options as opts
from .common import command, console, device_option, parse_kwargs, recipe_model
from .render import print_run_summary


@command
def train(
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Model spec, e.g. scnn2:16-32 (see `edgerobust models`), or your own "
                                        "package.module:factory (kwargs from the recipe's [model] kwargs)."),
    kwargs: Optional[str] = opts.KWARGS,
    mean: Optional[str] = opts.MEAN,
    std: Optional[str] = opts.STD,
    data: Optional[str] = typer.Option(None, "--data", "-d",
                                       help="Dataset name (digits, synthetic, mnist, cifar10, ...)."),
    out: Path = opts.out_option("runs/train"),
    recipe: Optional[str] = opts.recipe_option(),
    epochs: Optional[int] = opts.EPOCHS,
    batch_size: Optional[int] = opts.BATCH_SIZE,
    lr: Optional[float] = opts.LR,
    optimizer: Optional[str] = opts.OPTIMIZER,
    schedule: Optional[str] = typer.Option(None, help="constant, step, cosine or cyclic."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    seed: Optional[int] = typer.Option(None, help="Random seed (runs are deterministic on CPU)."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Standard augmentation."),
    data_root: Optional[Path] = opts.DATA_ROOT,
    adv: Optional[str] = typer.Option(None, "--adv", help="Adversarial training: pgd (Madry, mixed loss), fgsm-rs "
                                      "(fast, with the catastrophic-overfitting guard), trades, or none."),
    eps: Optional[str] = typer.Option(None, "--eps", help="L∞ ε of adversarial training, e.g. 0.1 or 8/255."),
    adv_steps: Optional[int] = typer.Option(None, "--adv-steps", help="Attack steps per batch (PGD, TRADES)."),
    adv_weight: Optional[float] = typer.Option(None, "--adv-weight", help="Weight w of CE(x_adv) in "
                                               "w·CE(x_adv)+(1−w)·CE(x) (default 0.9); TRADES: β (default 6)."),
    eps_schedule: Optional[str] = typer.Option(None, "--eps-schedule", help="constant, staged (three stages, "
                                               "Marshall) or linear (ramp over the first half)."),
    loss: Optional[str] = typer.Option(None, "--loss", help="Training loss by name ([train] loss; see `edgerobust "
                                       "losses`); it takes the [adversarial] settings it declares."),
    loss_options: Optional[str] = typer.Option(None, "--loss-options", help="The loss's own settings as JSON, e.g. "
                                               "'{\"sigma\": 0.5, \"m\": 4}' ([train] loss_options)."),
    guard: Optional[bool] = typer.Option(None, "--guard/--no-guard", help="Stop and restore the previous epoch "
                                         "when PGD accuracy on a training batch collapses (default on for fgsm-rs)."),
    activation: Optional[str] = typer.Option(None, "--activation", help="Replace the model's ReLUs: kaf, elu, "
                                             "swish, gelu, softplus, kwta (recorded with the run)."),
    pca: Optional[float] = typer.Option(None, "--pca", help="Song's PCA first layer for smoothing at this σ: fitted "
                                        "on the training split, keeps the components with variance above σ²/k "
                                        "([model] pca; recorded with the run)."),
    pca_k: Optional[float] = typer.Option(None, "--pca-k", help="k of --pca's σ²/k threshold (default 5; Song's "
                                          "ablation 10)."),
    qat: Optional[bool] = typer.Option(None, "--qat/--no-qat", help="Quantization-aware training: train through "
                                       "the int8 export's fake quantization (per-channel int8 weights, uint8 "
                                       "activations, round half to even); combines with every loss."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
    device: str = device_option(),
    quiet: bool = opts.quiet_option(),
) -> None:
    """Train a classifier into a run directory (model.pt + model.json), naturally or adversarially.

    Multi-process (DDP): torchrun --nproc-per-node N -m edgerobust train …
    """
    spec = load_recipe(recipe or "default")
    model_config, model_options = recipe_model(spec, model, kwargs, mean, std)
    model = model or model_config.spec
    if pca is not None or pca_k is not None:
        if pca is None and model_config.pca is None:
            raise EdgeRobustError("--pca-k needs --pca SIGMA (or [model] pca in the recipe), e.g. --pca 0.25 --pca-k 5")
        model_options["pca"] = {k: v for k, v in (model_config.pca or {}).items() if k != "components"} | \
            ({"sigma": pca} if pca is not None else {}) | ({"k": pca_k} if pca_k is not None else {})
    data_section = section(spec, "data")
    data = data or data_section.name
    config = config_from_recipe(spec, dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                                           schedule=schedule, weight_decay=weight_decay, seed=seed, augment=augment,
                                           loss=loss, loss_options=parse_kwargs(loss_options, "--loss-options"),
                                           qat=qat))
    if adv is None and (eps is not None or adv_steps is not None or eps_schedule is not None) \
            and "adversarial" not in spec:
        adv = "pgd"  # asking for an ε means adversarial training
    adversarial = adversarial_from_recipe(spec, dict(
        method=given(adv, "--adv"), eps=eps, steps=given(adv_steps, "--adv-steps"),
        weight=given(adv_weight, "--adv-weight"), schedule=given(eps_schedule, "--eps-schedule"), guard=guard))
    run = train_model(out, model, data, config,
                      TrainSetup(data_root=data_root or data_section.root, resume=resume,
                                 data_options=data_section.options if data == data_section.name else None,
                                 model_options=model_options, recipe=spec, adversarial=adversarial, device=device,
                                 activation=activation),
                      progress=False if quiet else None)
    from ..training.distributed import is_main_process

    if not is_main_process():
        return
    print_run_summary(run)
    console.print(f"run directory: [bold]{run.path}[/]")
