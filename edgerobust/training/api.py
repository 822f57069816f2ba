"""Train a model into a run directory: the library call behind `edgerobust train`."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..claim import check_output, locked
from ..compute_device import describe_device, resolve_device
from ..config import AdversarialConfig, TrainConfig, build, is_adversarial, section
from ..data import default_augment, load_dataset
from ..errors import EdgeRobustError
from ..models import build_model, count_flops, count_parameters, is_user_model, spec_text
from ..models.pca import fit_for_run, pca_settings
from ..run import CHECKPOINT_NAME, MANIFEST_NAME, WEIGHTS_NAME, RunDir
from . import distributed
from .loop import Callback, LoopSetup, Trainer
from .losses import ADVERSARIAL_SETTINGS, ALIASES, LOSSES, TrainingLoss, build_training_loss, declared_settings
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


@dataclass
class TrainSetup:
    """How a run is trained beyond its [train] config, passed whole to `train_model`."""
    data_root: str | Path | None = None  # directory holding on-disk datasets
    data_options: dict | None = None  # the dataset's options ([data] options)
    adversarial: AdversarialConfig | dict[str, Any] | None = None  # [adversarial] settings (`adversarial_training`)
    loss: TrainingLoss | None = None  # wins over `adversarial`
    callbacks: Sequence[Callback] = ()
    init_from: RunDir | None = None  # start from this run's weights
    resume: bool = False  # continue from the run's checkpoint
    recipe: dict | None = None  # recorded in the manifest
    description: str = "train"  # the progress bar's label
    device: str | torch.device | None = None  # auto (None: CUDA when present), cpu, cuda or cuda:N
    activation: str | dict | None = None  # kaf, elu, swish, gelu, softplus, kwta: replaces the model's ReLUs
    model_options: dict[str, Any] | None = None  # a user model's factory `kwargs`, `mean`/`std` and `pca` ([model])


def train_model(out: str | Path, model_spec: str, data: str = "digits", config: TrainConfig | None = None,
                setup: TrainSetup | None = None, *, progress: bool | None = None) -> RunDir:
    """Train `model_spec` on `data` into run directory `out` (checkpointed every epoch; `setup.resume` continues).

    The loss is `config.loss` ([train] loss) by name, else [adversarial]'s method (`setup.adversarial`), else
    natural; an explicit `setup.loss` object wins. `setup.activation` (models/activations.py) replaces the model's
    ReLUs and is recorded in the manifest. `setup.model_options["pca"]` ({sigma, k} or {components}) fits Song's PCA
    first layer on the training split and records it as `model.pca`. `setup.device`: the model and every batch live
    there. Under torchrun the ranks train together (DDP; NCCL ranks on their own GPU) and rank 0 alone writes the run.
    """
    config = (config or TrainConfig()).validate()
    setup = setup or TrainSetup()
    dist = distributed.init_from_env()
    device = dist.device if dist is not None else resolve_device(setup.device)
    loss, callbacks = setup.loss, list(setup.callbacks)
    if loss is None:
        loss, guard = training_loss(config, setup.adversarial)
        callbacks += [guard] if guard else []
    activation = setup.activation
    if activation is not None:
        from ..models.activations import parse_activation

        activation = parse_activation(activation)  # an unknown name fails before any work
    if (setup.model_options or {}).get("pca") is not None:
        pca_settings(setup.model_options["pca"])  # a malformed table fails before any work
        if setup.init_from is not None:
            raise EdgeRobustError("[model] pca fits a new first layer on the training split; a model initialised "
                                  "from another run keeps that run's layers: drop pca (or --init-from)")
    check_output(out)
    check_fresh_output(Path(out), setup.resume)
    train_set = load_dataset(data, "train", setup.data_root, **(setup.data_options or {}))
    test_set = load_dataset(data, "test", setup.data_root, **(setup.data_options or {}))
    with locked(out):  # one command writes a run directory at a time (rank 0 alone under torchrun)
        check_fresh_output(Path(out), setup.resume)  # again under the lock: another command may have finished
        return _train_into(out, model_spec, data, config, dist, train_set, test_set, data_root=setup.data_root,
                           data_options=setup.data_options, model_options=setup.model_options,
                           resume=setup.resume, loss=loss, callbacks=callbacks, recipe=setup.recipe,
                           progress=progress, init_from=setup.init_from, description=setup.description, device=device,
                           activation=activation)


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
                resume, loss, callbacks, recipe, progress, init_from, description, device, activation=None) -> RunDir:
    run = RunDir.create(out)
    pca_record = None
    if init_from is not None:
        model = init_from.load_model()
        model.train()
        run.add_parent(init_from, "initialised from")
    else:
        torch.manual_seed(config.seed)  # seeded initial weights: the same command gives the same model
        mean, std = normalization(model_spec, train_set, model_options)
        source: dict[str, Any] = {}
        pca = None
        if (model_options or {}).get("pca") is not None:  # Song's PCA first layer, fitted on the training split
            pca, pca_record = fit_for_run(train_set.images, model_options["pca"], train_set.split)
        model = build_model(model_spec, train_set.input_shape, train_set.num_classes, mean, std,
                            kwargs=(model_options or {}).get("kwargs"), source=source, activation=activation,
                            pca=pca)
    trainer = Trainer(model, train_set, config, LoopSetup(loss=loss, eval_data=test_set, callbacks=callbacks,
                                                          checkpoint_path=run.checkpoint_path,
                                                          augment=default_augment(data), description=description),
                      progress=progress, device=device)
    result = trainer.fit(resume=resume)
    qat = trainer.qat.describe() if trainer.qat is not None else None
    if trainer.qat is not None:
        trainer.qat.qat.detach()  # the run's weights are the plain network's; the record rebuilds the fake quant
    if dist is not None and not dist.is_main:
        return distributed.finished_run(out, dist)
    info = model_info(model_spec, train_set, (mean, std), source) if init_from is None \
        else dict(init_from.manifest["model"])
    if activation is not None and init_from is None:
        info["activation"] = activation
    if init_from is None and pca_record is not None:
        info["pca"] = pca_record
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
                  "device": describe_device(trainer.device), "qat": qat},
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
    return _build_loss(adv.method, adv, epochs, {})


def training_loss(config: TrainConfig, settings: AdversarialConfig | dict[str, Any] | None
                  ) -> tuple[TrainingLoss | None, CatastrophicOverfittingGuard | None]:
    """The loss (and guard) a training run uses: [train] loss by name with [train] loss_options, receiving the
    [adversarial] settings it declares; without [train] loss, [adversarial]'s method (`adversarial_training`)."""
    if config.loss is None:
        return adversarial_training(settings, config.epochs)
    return _build_loss(config.loss, adversarial_config(settings), config.epochs, config.loss_options)


def check_loss_options(name: str, options: dict[str, Any]) -> None:
    """[train] loss_options are the loss's own: each must be declared by it, even one an [adversarial] setting shares
    a name with (offered, an undeclared one is dropped silently: a distillation loss's old `alpha` would be)."""
    named, takes_any = declared_settings(LOSSES.get(ALIASES.get(name, name)))
    stray = sorted(k for k in options if k not in named and not takes_any)
    if stray:
        hint = " (the soft term's weight is soft_weight)" if "alpha" in stray and "soft_weight" in named else ""
        raise EdgeRobustError(f"[train] loss_options: loss '{name}' has no setting {', '.join(stray)}{hint}; its "
                              f"settings: {', '.join(k for k in named if k != 'teacher') or 'none'}")


def _build_loss(name: str, adv: AdversarialConfig | None, epochs: int, options: dict[str, Any]
                ) -> tuple[TrainingLoss, CatastrophicOverfittingGuard | None]:
    offered: dict[str, Any] = {"epochs": epochs}
    if adv is not None:
        if isinstance(adv.eps, list):
            raise EdgeRobustError(f"[adversarial] eps = {adv.eps}: training takes one ε; a list is a grid, which "
                                  "`edgerobust compress` runs (one dense source per ε)")
        offered |= {k: getattr(adv, k) for k in ADVERSARIAL_SETTINGS if k != "epochs"}
        offered = {k: v for k, v in offered.items() if v is not None or k in ("alpha", "weight")}
        if adv.values is not None:
            offered["values"] = tuple(adv.values)
    check_loss_options(name, options)
    loss = build_training_loss(name, **(offered | options))  # the loss's own options win over [adversarial]'s
    adv = adv or AdversarialConfig()
    schedule = getattr(loss, "schedule", None)
    guard = None
    if schedule is not None and (adv.guard if adv.guard is not None else getattr(loss, "guard_by_default", False)):
        guard = CatastrophicOverfittingGuard(schedule.max_eps, steps=adv.guard_steps,
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
