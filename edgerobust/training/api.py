"""Train a model into a run directory: the library call behind `edgerobust train`."""
from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data import default_augment, load_dataset
from ..errors import EdgeRobustError
from ..models import ModelSpec, build_model, count_flops, count_parameters
from ..run import RunDir
from .loop import Callback, Trainer, TrainConfig
from .losses import TrainingLoss

TRAIN_KEYS = {f.name for f in fields(TrainConfig)}


def model_info(spec: str, dataset) -> dict[str, Any]:
    return {"spec": str(ModelSpec.parse(spec)), "input_shape": list(dataset.input_shape),
            "num_classes": dataset.num_classes, "mean": list(dataset.mean), "std": list(dataset.std)}


def train_model(out: str | Path, model_spec: str, data: str = "digits", config: TrainConfig | None = None, *,
                data_root: str | Path | None = None, data_options: dict | None = None, resume: bool = False,
                loss: TrainingLoss | None = None, callbacks: Sequence[Callback] = (), recipe: dict | None = None,
                progress: bool | None = None, init_from: RunDir | None = None, description: str = "train") -> RunDir:
    """Train `model_spec` on `data` into run directory `out` (checkpointed every epoch; `resume` continues)."""
    config = (config or TrainConfig()).validate()
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
                      description=description)
    result = trainer.fit(resume=resume)
    info = model_info(model_spec, train_set) if init_from is None else dict(init_from.manifest["model"])
    final = result.final
    run.save_model(
        model, info,
        dataset={"train": train_set.describe(), "test": test_set.describe(), "root": str(data_root or "")},
        training={"config": asdict(config), "loss": getattr(trainer.loss, "describe", lambda: {})(),
                  "augment": trainer.augment.describe(), "history": result.history,
                  "stopped_early": result.stopped_early,
                  "callbacks": [type(cb).__name__ for cb in callbacks]},
        recipe=recipe or {},
        seed=config.seed,
        metrics={"test_accuracy": final.get("test_accuracy"), "train_accuracy": final.get("train_accuracy"),
                 "parameters": count_parameters(model), "flops": count_flops(model, train_set.input_shape)},
    )
    return run


def config_from_recipe(recipe: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
    from ..recipe import section

    values = section(recipe, "train", TRAIN_KEYS)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig(**values).validate()
    except TypeError as exc:
        raise EdgeRobustError(f"bad [train] settings: {exc}") from None
