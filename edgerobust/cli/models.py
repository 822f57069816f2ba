"""`edgerobust models`, `edgerobust datasets` and `edgerobust losses`."""
from __future__ import annotations

import torch
import typer

from ..data import DATASETS
from ..errors import EdgeRobustError
from ..models import MODELS, build_model, count_flops, count_parameters
from ..training.losses import LOSSES, declared_settings, needs_labels
from .common import command, console, parse_shape
from .render import table


@command
def models(
    shape: str = typer.Option("3,32,32", "--shape", help="Input shape C,H,W for the counts."),
    classes: int = typer.Option(10, "--classes", help="Number of classes."),
) -> None:
    """List the model zoo with parameters and FLOPs for an input shape."""
    input_shape = parse_shape(shape)
    if classes < 2:
        raise EdgeRobustError(f"--classes {classes}: a classifier needs at least 2 classes")
    try:
        torch.empty(1, *input_shape)
    except (RuntimeError, MemoryError):
        raise EdgeRobustError(f"inputs of shape {shape} cannot be allocated on this machine; choose a smaller "
                              "--shape") from None
    rows = []
    for name in MODELS:
        try:
            model = build_model(name, input_shape, classes)
            rows.append((name, count_parameters(model), count_flops(model, input_shape), MODELS.help(name)))
        except EdgeRobustError as exc:
            rows.append((name, None, None, f"not for {shape}: {exc}"[:80]))
    title = f"models at input {input_shape}, {classes} classes"
    console.print(table(title, ("name", "params", "FLOPs", "about"), rows))


@command
def datasets() -> None:
    """List the datasets."""
    console.print(table("datasets", ("name", "about"), ((n, DATASETS.help(n)) for n in DATASETS)))


@command
def losses() -> None:
    """List the training losses ([train] loss / --loss) with the settings each declares."""
    rows = []
    for name in LOSSES:
        named, takes_any = declared_settings(LOSSES.get(name))
        settings = ", ".join(named) + (", …" if takes_any else "")
        rows.append((name, settings, "yes" if needs_labels(LOSSES.get(name)) else "no", LOSSES.help(name)))
    console.print(table("training losses", ("name", "settings", "labels", "about"), rows))
