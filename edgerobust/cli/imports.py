"""`edgerobust import`: a run directory from what a user already has (weights trained elsewhere, an ONNX file)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..config import section
from ..errors import EdgeRobustError
from ..imports import ImportSetup, import_onnx, import_weights
from ..recipe import load_recipe
from . import options as opts
from .common import command, console, device_option, parse_shape, recipe_model
from .render import print_run_summary


@command
def import_(
    onnx_file: Optional[Path] = typer.Argument(None, metavar="[MODEL.onnx]", help="An ONNX classifier (one image "
                                               "input, one logits output): the run's model is that file."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The model the weights are for: a zoo spec, an "
                                        "installed entry point, or package.module:factory (kwargs from the recipe's "
                                        "[model] kwargs)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="A state dict: .pt/.pth (loaded with "
                                 "weights_only=True) or .safetensors."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Dataset to measure clean accuracy on and to "
                                       "record (the run's test split for later commands)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Directory (or file) holding the dataset."),
    shape: Optional[str] = typer.Option(None, "--shape", help="Input shape C,H,W (without --data)."),
    classes: Optional[int] = typer.Option(None, "--classes", help="Number of classes (without --data)."),
    kwargs: Optional[str] = opts.KWARGS,
    mean: Optional[str] = opts.MEAN,
    std: Optional[str] = opts.STD,
    recipe: Optional[str] = opts.recipe_option(help="Recipe whose [model] and [data] apply."),
    out: Path = opts.out_option("runs/import"),
    device: str = device_option(),
) -> None:
    """Make a run directory from a model trained elsewhere (--model SPEC --weights FILE) or from an ONNX file;
    every other command then takes it (an ONNX run: not train or compress, which need PyTorch weights)."""
    spec = load_recipe(recipe) if recipe else {}
    model_config, model_options = recipe_model(spec, model, kwargs, mean, std)
    data_section = section(spec, "data")
    name = data or (data_section.name if "data" in spec else None)
    data_root = data_root or (data_section.root if name == data_section.name else None)
    data_options = data_section.options if name == data_section.name else None
    setup = ImportSetup(data=name, data_root=data_root, data_options=data_options,
                        input_shape=parse_shape(shape) if shape else None, num_classes=classes, device=device,
                        recipe=spec)
    if onnx_file is not None:
        if model or weights or kwargs or classes:
            raise EdgeRobustError("an ONNX file is the whole model: drop --model, --weights, --kwargs and --classes")
        setup.model_options = {"mean": model_config.mean, "std": model_config.std}
        run = import_onnx(out, onnx_file, setup)
        print_run_summary(run)
        conversion = run.manifest["model"]["source"]["torch_conversion"]
        if not conversion["available"]:
            console.print(f"white-box attacks, train and compress are unavailable: no PyTorch module "
                          f"({conversion['reason']}); query-only attacks (--suite none --attack square), export, "
                          "verify, bench and device replay work", highlight=False)
        console.print(f"run directory: [bold]{run.path}[/]")
        return
    if weights is None:
        raise EdgeRobustError("pass --weights FILE (a state dict) with --model, or an ONNX file")
    if model is None and "model" not in spec:
        raise EdgeRobustError("pass --model: the spec or import path of the network the weights are for")
    setup.model_options = model_options
    run = import_weights(out, model or model_config.spec, weights, setup)
    print_run_summary(run)
    console.print(f"run directory: [bold]{run.path}[/]")
