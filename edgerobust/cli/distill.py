"""`edgerobust distill`: a small student from a teacher run (Barmpas, ch. 4)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..config import ConfigError, given, section
from ..distill import distill_model, temperature_sweep
from ..distill.settings import METHODS, THESIS_TEMPERATURES
from ..errors import EdgeRobustError
from ..recipe import load_recipe
from ..training.api import config_from_recipe
from . import options as opts
from .common import command, console, device_option, split_list
from .defaults import run_argument
from .render import table


def _temperatures(text: str | None) -> list[float] | None:
    if text is None:
        return None
    if text.strip() == "thesis":
        return list(THESIS_TEMPERATURES)
    try:
        return [float(t) for t in split_list(text) or []]
    except ValueError:
        raise EdgeRobustError(f"--sweep {text!r}: give temperatures as a comma list, e.g. 0.5,1,2,4, "
                              "or 'thesis' for Barmpas's 18 values") from None


@command
def distill(
    teacher: Optional[Path] = typer.Option(None, "--teacher", "-t", help="Teacher run directory (default: the "
                                           "recipe's, else the current directory or the most recent run)."),
    student: Optional[str] = typer.Option(None, "--student", "-s", help="Student model spec, e.g. scnn2:16-32."),
    activation: Optional[str] = typer.Option(None, "--activation", help="Replace the student's ReLUs: kaf, elu, "
                                             "swish, gelu, softplus, kwta."),
    method: Optional[str] = typer.Option(None, "--method", help=", ".join(METHODS) + " (default temperature)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-T", help="Distillation temperature T."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="Temperature sweep: a comma list of T, or 'thesis'; "
                                        "one student per T and a table of accuracy per T."),
    soft_weight: Optional[float] = typer.Option(None, "--soft-weight", help="Weight α of the soft term (hinton, "
                                                "ard, rslad)."),
    old_alpha: Optional[float] = typer.Option(None, "--alpha", hidden=True),
    eps: Optional[str] = typer.Option(None, "--eps", help="L∞ ε of ard / rslad and of the robustness check."),
    pool: Optional[str] = typer.Option(None, "--pool", help="'train' or dataset names (comma list): the images "
                                       "the student learns on."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early-stopping patience (epochs)."),
    out: Path = opts.out_option("runs/distill", help="Run directory (a sweep: its parent)."),
    recipe: Optional[str] = opts.recipe_option(),
    epochs: Optional[int] = opts.EPOCHS,
    batch_size: Optional[int] = opts.BATCH_SIZE,
    lr: Optional[float] = opts.LR,
    optimizer: Optional[str] = opts.OPTIMIZER,
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    data_root: Optional[Path] = opts.DATA_ROOT,
    device: str = device_option(),
    quiet: bool = opts.quiet_option(),
) -> None:
    """Distil a teacher run into a small student run; the manifest records the teacher."""
    if old_alpha is not None:  # an attack's step size elsewhere ([adversarial] alpha): the weight has its own name
        raise ConfigError("distill --alpha is now --soft-weight (the weight of the soft term)")
    spec = load_recipe(recipe or "default")
    config = section(spec, "distill", overrides=dict(
        student=student, activation=activation, method=given(method, "--method"),
        temperature=given(temperature, "--temperature"),
        soft_weight=given(soft_weight, "--soft-weight"), eps=eps, pool=split_list(pool),
        patience=given(patience, "--patience"),
        temperatures=_temperatures(sweep))).check()
    train_config = config_from_recipe(spec, dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                                                 seed=seed))
    teacher_path = teacher or (Path(config.teacher) if config.teacher else run_argument(None))
    root = data_root or section(spec, "data").root
    progress = False if quiet else None
    if config.temperatures:
        result = temperature_sweep(out, teacher_path, config.temperatures, config, train_config,
                                   data_root=root, device=device, progress=progress)
        rows = [(f"{r['temperature']:g}", f"{r['test_accuracy']:.4f}", f"{r['agreement']:.4f}",
                 f"{r['robust_accuracy']:.4f}", r["epochs"]) for r in result["rows"]]
        console.print(table(f"temperature sweep (teacher {result['teacher']['clean_accuracy']:.4f})",
                            ("T", "test accuracy", "agreement", "robust", "epochs"), rows))
        console.print(f"sweep: [bold]{out / 'sweep.json'}[/] (best T = {result['best']['temperature']:g})")
        return
    run = distill_model(out, teacher_path, config, train_config, data_root=root, device=device,
                        progress=progress, recipe=spec)
    d = run.manifest["distillation"]
    t, s = d["teacher"], d["student"]
    rows = [("model", t["spec"], run.manifest["model"]["spec"]),
            ("parameters", t["parameters"], run.manifest["metrics"]["parameters"]),
            ("clean accuracy", f"{t['clean_accuracy']:.4f}", f"{s['clean_accuracy']:.4f}"),
            (f"{s['attack']} accuracy (ε={s['eps']:.4g})", f"{t['robust_accuracy']:.4f}",
             f"{s['robust_accuracy']:.4f}"),
            ("agreement with the teacher", "", f"{d['test_agreement']:.4f}")]
    console.print(table(f"distillation ({d['method']})", ("", "teacher", "student"), rows))
    console.print(f"run directory: [bold]{run.path}[/]")
