"""Train a model into a run directory: the library call behind `edgerobust train`."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..claim import check_output, locked
from ..compute_device import describe_device, resolve_device
from ..config import AdversarialConfig, TrainConfig, build, is_adversarial, section
from ..data import default_augment, load_dataset
from ..errors import EdgeRobustError
from ..models import build_model, count_flops, count_parameters, is_user_model, spec_text
from ..run import CHECKPOINT_NAME, MANIFEST_NAME, WEIGHTS_NAME, RunDir
from . import distributed
from .adversarial import CLI_NAMES, build_training_loss
from .loop import Callback, Trainer
from .losses import TrainingLoss
from .overfit_guard import CatastrophicOverfittingGuard


def model_info(spec: str, dataset, norm: tuple[Sequence[float], Sequence[float]] | None = None,
               source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's `model` section; `source` records a user model's origin (models/external.py)."""
    mean, std = norm or (dataset.mean, dataset.std)
    info = {"spec": spec_text(spec), "input_shape": list(dataset.input_shape), "num_classes": dataset.num_classes,
            "mean": list(mean), "std": list(std)}
    return info | ({"source": source} if source else {})


def normalization(spec: str, dataset, model_options: dict[str, Any] | None) -> tuple[list[float], list[float]]:
    """The model's input normalisation: `[model] mean/std` when given; a zoo model the dataset's statistics; a user
    model none (it takes [0,1] pixels)."""
    options = model_options or {}
    channels = dataset.input_shape[0]
    if options.get("mean") or options.get("std"):
        mean, std = list(options.get("mean") or [0.0] * channels), list(options.get("std") or [1.0] * channels)
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise EdgeRobustError(f"--mean/--std must give {channels} numbers (one per channel; std > 0), got "
                                  f"mean {mean} and std {std}")
        return mean, std
    if is_user_model(spec):
        return [0.0] * channels, [1.0] * channels
    return list(dataset.mean), list(dataset.std)


def train_model(out: str | Path, model_spec: str, data: str = "digits", config: TrainConfig | None = None, *,
                data_root: str | Path | None = None, data_options: dict | None = None, resume: bool = False,
                loss: TrainingLoss | None = None, callbacks: Sequence[Callback] = (), recipe: dict | None = None,
                progress: bool | None = None, init_from: RunDir | None = None, description: str = "train",
                adversarial: AdversarialConfig | dict[str, Any] | None = None,
                device: str | torch.device | None = None, model_options: dict[str, Any] | None = None) -> RunDir:
    """Train `model_spec` on `data` into run directory `out` (checkpointed every epoch; `resume` continues).

    `model_options`: a user model's factory `kwargs` and the `mean`/`std` it expects ([model] in a recipe).

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
    check_output(out)
    check_fresh_output(Path(out), resume)
    train_set = load_dataset(data, "train", data_root, **(data_options or {}))
    test_set = load_dataset(data, "test", data_root, **(data_options or {}))
    with locked(out):  # one command writes a run directory at a time (rank 0 alone under torchrun)
        check_fresh_output(Path(out), resume)  # again under the lock: another command may have finished meanwhile
        return _train_into(out, model_spec, data, config, dist, train_set, test_set, data_root=data_root,
                           data_options=data_options, model_options=model_options,
                           resume=resume, loss=loss, callbacks=callbacks, recipe=recipe, progress=progress,
                           init_from=init_from, description=description, device=device)


def check_fresh_output(out: Path, resume: bool) -> None:
    """Refuse to train over a finished run (trained or compressed) or a checkpoint unless resuming it."""
    if resume:
        return
    if (out / CHECKPOINT_NAME).exists():
        raise EdgeRobustError(f"{out} already holds a training checkpoint; pass --resume to continue it "
                              "or choose another --out")
    if (out / MANIFEST_NAME).exists() or (out / WEIGHTS_NAME).exists():
        raise EdgeRobustError(f"{out} already holds a run ({MANIFEST_NAME}); training would overwrite it; "
                              "choose another --out")


def _train_into(out, model_spec, data, config, dist, train_set, test_set, *, data_root, data_options, model_options,
                resume, loss, callbacks, recipe, progress, init_from, description, device) -> RunDir:
    run = RunDir.create(out)
    if init_from is not None:
        model = init_from.load_model()
        model.train()
        run.add_parent(init_from, "initialised from")
    else:
        torch.manual_seed(config.seed)  # seeded initial weights: the same command gives the same model
        mean, std = normalization(model_spec, train_set, model_options)
        source: dict[str, Any] = {}
        model = build_model(model_spec, train_set.input_shape, train_set.num_classes, mean, std,
                            kwargs=(model_options or {}).get("kwargs"), source=source)
    trainer = Trainer(model, train_set, config, loss=loss, eval_data=test_set, callbacks=callbacks,
                      checkpoint_path=run.checkpoint_path, augment=default_augment(data), progress=progress,
                      description=description, device=device)
    result = trainer.fit(resume=resume)
    if dist is not None and not dist.is_main:
        return distributed.finished_run(out, dist)
    info = model_info(model_spec, train_set, (mean, std), source) if init_from is None \
        else dict(init_from.manifest["model"])
    final = result.final
    run.save_model(
        model, info,
        dataset={"train": train_set.describe(), "test": test_set.describe(), "root": str(data_root or ""),
                 "options": dict(data_options or {})},
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
    """[train] with command-line overrides (None values are not given), through the config layer."""
    return section(recipe, "train", overrides=overrides).validate()


def adversarial_config(settings: AdversarialConfig | dict[str, Any] | None) -> AdversarialConfig | None:
    """[adversarial]-style settings (a dataclass, or a table as recipes and manifests hold them) as the dataclass."""
    if settings is None or isinstance(settings, AdversarialConfig):
        return settings
    return build(AdversarialConfig, settings, "[adversarial]") if settings else None


def adversarial_training(settings: AdversarialConfig | dict[str, Any] | None, epochs: int
                         ) -> tuple[TrainingLoss | None, CatastrophicOverfittingGuard | None]:
    """The loss and (optional) overfitting guard that [adversarial] settings ask for; (None, None) for none."""
    adv = adversarial_config(settings)
    if not is_adversarial(adv):
        return None, None
    if isinstance(adv.eps, list):
        raise EdgeRobustError(f"[adversarial] eps = {adv.eps}: training takes one ε; a list is a grid, which "
                              "`edgerobust compress` runs (one dense source per ε)")
    options = {k: getattr(adv, k) for k in ("stages", "start", "ramp", "min_steps") if getattr(adv, k) is not None}
    if adv.values is not None:
        options["values"] = tuple(adv.values)
    loss = build_training_loss(adv.method, eps=adv.eps, steps=adv.steps, alpha=adv.alpha, weight=adv.weight,
                               schedule=adv.schedule, epochs=epochs, random_init=adv.random_init, seed=adv.seed,
                               **options)
    guard = None
    if adv.guard if adv.guard is not None else CLI_NAMES[adv.method] == "fgsm-rs":  # on for the fast method
        guard = CatastrophicOverfittingGuard(loss.schedule.max_eps, steps=adv.guard_steps,
                                             batch_size=adv.guard_batch_size, max_drop=adv.guard_max_drop,
                                             floor=adv.guard_floor)
    return loss, guard


def adversarial_from_recipe(recipe: dict[str, Any], overrides: dict[str, Any] | None = None,
                            name: str = "adversarial") -> AdversarialConfig | None:
    """The recipe's [adversarial] section with command-line overrides (None values are not given); None when the
    recipe has no such section and nothing was overridden (natural training)."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    table = recipe.get(name.split(".")[0], {})
    for part in name.split(".")[1:]:
        table = table.get(part, {}) if isinstance(table, dict) else {}
    if not table and not given:
        section(recipe, name)  # still checks the table's shape
        return None
    return section(recipe, name, overrides=given)
