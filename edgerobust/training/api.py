"""Train a model into a run directory: the library call behind `edgerobust train`."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ..compute_device import describe_device, resolve_device
from ..data import default_augment, load_dataset
from ..errors import EdgeRobustError
from ..models import ModelSpec, build_model, count_flops, count_parameters
from ..run import RunDir
from . import distributed
from .adversarial import CLI_NAMES, build_training_loss
from .loop import Callback, TrainConfig, Trainer
from .losses import TrainingLoss
from .overfit_guard import CatastrophicOverfittingGuard

TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
NATURAL_METHODS = ("none", "natural", "")  # [adversarial] method values that mean natural training
# [adversarial]: method = pgd | fgsm-rs | trades | none; the ε schedule; the catastrophic-overfitting guard
SCHEDULE_KEYS = {"stages", "values", "start", "ramp", "min_steps"}
GUARD_KEYS = {"guard", "guard_steps", "guard_max_drop", "guard_floor", "guard_batch_size"}
ADVERSARIAL_KEYS = {"method", "eps", "steps", "alpha", "weight", "schedule", "random_init", "seed"} | SCHEDULE_KEYS \
    | GUARD_KEYS


def model_info(spec: str, dataset) -> dict[str, Any]:
    return {"spec": str(ModelSpec.parse(spec)), "input_shape": list(dataset.input_shape),
            "num_classes": dataset.num_classes, "mean": list(dataset.mean), "std": list(dataset.std)}


def train_model(out: str | Path, model_spec: str, data: str = "digits", config: TrainConfig | None = None, *,
                data_root: str | Path | None = None, data_options: dict | None = None, resume: bool = False,
                loss: TrainingLoss | None = None, callbacks: Sequence[Callback] = (), recipe: dict | None = None,
                progress: bool | None = None, init_from: RunDir | None = None, description: str = "train",
                adversarial: dict[str, Any] | None = None, device: str | torch.device | None = None) -> RunDir:
    """Train `model_spec` on `data` into run directory `out` (checkpointed every epoch; `resume` continues).

    `adversarial` holds [adversarial] recipe settings (see `adversarial_training`); an explicit `loss` wins.
    `device`: auto (None: CUDA when present), cpu, cuda or cuda:N; the model and every batch live there.
    Under torchrun the ranks train together (DDP; NCCL ranks on their own GPU) and rank 0 alone writes the run.
    """
    config = (config or TrainConfig()).validate()
    dist = distributed.init_from_env()
    device = dist.device if dist is not None else resolve_device(device)
    if adversarial and loss is None:
        loss, guard = adversarial_training(adversarial, config.epochs)
        callbacks = [*callbacks, *([guard] if guard else [])]
    train_set = load_dataset(data, "train", data_root, **(data_options or {}))
    test_set = load_dataset(data, "test", data_root, **(data_options or {}))
    run = RunDir.create(out)
    if not resume and run.checkpoint_path.exists():
        raise EdgeRobustError(f"{run.path} already holds a training checkpoint; pass --resume to continue it "
                              "or choose another --out")
    if init_from is not None:
        model = init_from.load_model()
        model.train()
        run.add_parent(init_from, "initialised from")
    else:
        torch.manual_seed(config.seed)  # seeded initial weights: the same command gives the same model
        model = build_model(model_spec, train_set.input_shape, train_set.num_classes, train_set.mean, train_set.std)
    trainer = Trainer(model, train_set, config, loss=loss, eval_data=test_set, callbacks=callbacks,
                      checkpoint_path=run.checkpoint_path, augment=default_augment(data), progress=progress,
                      description=description, device=device)
    result = trainer.fit(resume=resume)
    if dist is not None and not dist.is_main:
        return distributed.finished_run(out, dist)
    info = model_info(model_spec, train_set) if init_from is None else dict(init_from.manifest["model"])
    final = result.final
    run.save_model(
        model, info,
        dataset={"train": train_set.describe(), "test": test_set.describe(), "root": str(data_root or "")},
        training={"config": asdict(config), "loss": getattr(trainer.loss, "describe", lambda: {})(),
                  "augment": trainer.augment.describe(), "history": result.history,
                  "stopped_early": result.stopped_early,
                  "callbacks": [type(cb).__name__ for cb in callbacks],
                  "overfit_guard": next((cb.describe() | {"fired": cb.fired} for cb in callbacks
                                         if isinstance(cb, CatastrophicOverfittingGuard)), None),
                  "distributed": dist.describe() if dist else None,
                  "device": describe_device(trainer.device)},
        recipe=recipe or {},
        seed=config.seed,
        metrics={"test_accuracy": final.get("test_accuracy"), "train_accuracy": final.get("train_accuracy"),
                 "parameters": count_parameters(model), "flops": count_flops(model, train_set.input_shape)},
    )
    distributed.barrier(dist)  # the other ranks open the run once it is written
    return run


def config_from_recipe(recipe: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
    from ..recipe import section

    values = section(recipe, "train", TRAIN_KEYS)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig(**values).validate()
    except TypeError as exc:
        raise EdgeRobustError(f"bad [train] settings: {exc}") from None


def _number(value: Any, name: str) -> float:
    try:
        return float(Fraction(str(value).strip()))
    except (ValueError, ZeroDivisionError):
        raise EdgeRobustError(f"[adversarial] {name} = {value!r} is not a number (use e.g. 0.1 or 8/255)") from None


def is_adversarial(settings: dict[str, Any] | None) -> bool:
    """Whether [adversarial] settings ask for adversarial training (the method defaults to pgd)."""
    return bool(settings) and str(settings.get("method", "pgd")) not in NATURAL_METHODS


def adversarial_training(settings: dict[str, Any], epochs: int) -> tuple[TrainingLoss | None,
                                                                        CatastrophicOverfittingGuard | None]:
    """The loss and (optional) overfitting guard that [adversarial] settings ask for; (None, None) for none."""
    unknown = sorted(set(settings) - ADVERSARIAL_KEYS)
    if unknown:
        raise EdgeRobustError(f"unknown [adversarial] setting(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(sorted(ADVERSARIAL_KEYS))}")
    method = str(settings.get("method", "pgd"))
    if method in NATURAL_METHODS:
        return None, None
    if method not in CLI_NAMES:
        raise EdgeRobustError(f"unknown adversarial method '{method}'; valid methods: pgd, fgsm-rs, trades, none")
    eps = _number(settings.get("eps", "8/255"), "eps")
    options = {k: settings[k] for k in SCHEDULE_KEYS | {"random_init", "seed"} if settings.get(k) is not None}
    if "values" in options:
        options["values"] = tuple(_number(v, "values") for v in options["values"])
    if "start" in options:
        options["start"] = _number(options["start"], "start")
    alpha = settings.get("alpha")
    loss = build_training_loss(method, eps=eps, steps=int(settings.get("steps", 10)),
                               alpha=None if alpha is None else _number(alpha, "alpha"), weight=settings.get("weight"),
                               schedule=str(settings.get("schedule", "constant")), epochs=epochs, **options)
    guard = None
    if settings.get("guard", CLI_NAMES[method] == "fgsm-rs"):  # on by default for the fast method it exists for
        guard = CatastrophicOverfittingGuard(loss.schedule.max_eps, steps=int(settings.get("guard_steps", 5)),
                                             batch_size=int(settings.get("guard_batch_size", 256)),
                                             max_drop=float(settings.get("guard_max_drop", 0.2)),
                                             floor=float(settings.get("guard_floor", 0.0)))
    return loss, guard


def adversarial_from_recipe(recipe: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe's [adversarial] section with command-line overrides applied (None values are ignored)."""
    from ..recipe import section

    values = section(recipe, "adversarial", ADVERSARIAL_KEYS)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return values
