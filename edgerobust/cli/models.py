"""`edgerobust models`, `edgerobust datasets` and `edgerobust losses`."""
from __future__ import annotations

import torch
import typer

from ..data import DATASETS
from ..errors import EdgeRobustError
from ..models import ENTRY_POINT_GROUP, MODELS, build_model, count_flops, count_parameters, entry_points
from ..training.losses import LOSSES, declared_settings, needs_labels
from .common import command, console, parse_shape
from .render import table


@command
def models(
    shape: str = typer.Option("3,32,32", "--shape", help="Input shape C,H,W for the counts."),
    classes: int = typer.Option(10, "--classes", help="Number of classes."),
) -> None:
    """List the model zoo, and the models installed packages register (entry points), with parameters and FLOPs for
    an input shape. Your own model needs no registration: --model package.module:factory."""
    input_shape = parse_shape(shape)
    if classes < 2:
        raise EdgeRobustError(f"--classes {classes}: a classifier needs at least 2 classes")
    try:
        torch.empty(1, *input_shape)
    except (RuntimeError, MemoryError):
        raise EdgeRobustError(f"inputs of shape {shape} cannot be allocated on this machine; choose a smaller "
                              "--shape") from None
    rows = []
    points = entry_points()
    named = [(name, MODELS.help(name)) for name in MODELS] + [
        (name, f"{ENTRY_POINT_GROUP} entry point {point.value}"
               + (f" ({point.dist.name} {point.dist.version})" if point.dist is not None else ""))
        for name, point in sorted(points.items()) if name not in MODELS]
    for name, about in named:
        try:
            model = build_model(name, input_shape, classes)
            rows.append((name, count_parameters(model), count_flops(model, input_shape), about))
        except EdgeRobustError as exc:
            rows.append((name, None, None, f"{about}; cannot build it for {shape}: {exc}"[:200] if name in points
                         else f"not for {shape}: {exc}"[:80]))
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
