"""Distil a teacher run into a small student run: the library call behind `edgerobust distill` (Barmpas, ch. 4).

The teacher is loaded from its run (a missing or corrupt run is one error line), measured once (clean accuracy
on the test split, PGD-k accuracy on its first `eval_n` points), placed on the training device and never trained.
The student learns on a pool (the teacher's training set, or other datasets' images reshaped, without labels),
stops early when its argmax agreement with the teacher on a held-out part of the pool has not improved for
`patience` epochs (the best epoch's weights are kept), and its manifest records the teacher.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..claim import check_output, locked
from ..compute_device import describe_device, resolve_device
from ..config import TrainConfig
from ..data import ArrayDataset, load_dataset
from ..data.pool import unlabelled_pool
from ..errors import CheckpointError, EdgeRobustError, ShapeError
from ..evaluation.point import evaluate_point
from ..io import write_json
from ..models import build_model, count_flops, count_parameters
from ..models.activations import parse_activation
from ..run import RunDir
from ..training.api import check_fresh_output
from ..training.distill_losses import build_distillation_loss
from ..training.loop import Callback, LoopSetup, Trainer
from ..training.metrics import predict
from .settings import DistillConfig

SWEEP_NAME = "sweep.json"


class AgreementStopping(Callback):
    """Early stopping on the student's argmax agreement with the teacher on held-out images (Barmpas: patience 10);
    at the end the best epoch's weights are restored."""

    def __init__(self, images: torch.Tensor, teacher_labels: torch.Tensor, patience: int = 10):
        self.images, self.teacher_labels, self.patience = images, teacher_labels, patience
        self.best, self.best_epoch, self.best_state = -1.0, -1, None

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        agreement = float((predict(trainer.model, self.images).argmax(1).cpu() == self.teacher_labels).float().mean())
        metrics["agreement"] = agreement
        if agreement > self.best:
            self.best, self.best_epoch = agreement, epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
        elif epoch - self.best_epoch >= self.patience:
            trainer.stop_reason = (f"teacher agreement has not improved for {self.patience} epochs "
                                   f"(best {self.best:.4f} at epoch {self.best_epoch + 1})")

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.best_state = state["best"], state["best_epoch"], state["best_state"]


def open_teacher(teacher: str | Path | RunDir) -> RunDir:
    """The teacher run; a missing, corrupt or weightless run is one EdgeRobustError line."""
    run = teacher if isinstance(teacher, RunDir) else RunDir.open(teacher)
    if not run.weights_path.is_file():
        raise CheckpointError(f"teacher run {run.path} has no {run.weights_path.name}; train it first")
    return run


def teacher_dataset(run: RunDir) -> str:
    name = (run.manifest.get("dataset") or {}).get("train", {}).get("name") if isinstance(
        run.manifest.get("dataset"), dict) else None
    if not isinstance(name, str):
        raise EdgeRobustError(f"teacher run {run.path} does not record its dataset; pass --data")
    return name


def check_compatible(teacher: RunDir, shape, classes: int, what: str) -> None:
    if tuple(shape) != teacher.input_shape or int(classes) != teacher.num_classes:
        raise ShapeError(f"{what} takes inputs {tuple(shape)} with {classes} classes but the teacher {teacher.path} "
                         f"takes {teacher.input_shape} with {teacher.num_classes}; teacher and student must share "
                         "input shape and classes")


def measure(model: nn.Module, test: ArrayDataset, config: DistillConfig) -> dict[str, Any]:
    """Clean accuracy on the whole test split and PGD-k on its first eval_n points (ε = the [distill] ε)."""
    row = evaluate_point(model, test, config.eps, pgd_steps=config.pgd_steps, n=config.eval_n, seed=config.seed)
    return {"clean_accuracy": row["clean"], "robust_accuracy": row[f"pgd{config.pgd_steps}"],
            "attack": f"pgd{config.pgd_steps}", "eps": config.eps, "n_attacked": row["n_attacked"]}


def build_pool(config: DistillConfig, train: ArrayDataset, needs_labels: bool, data_root) -> ArrayDataset:
    if list(config.pool) == ["train"]:
        pool = train
    else:
        if needs_labels:
            raise EdgeRobustError(f"method '{config.method}' needs labels; an unlabelled pool "
                                  f"({', '.join(config.pool)}) has none: use pool = ['train'] or a label-free method "
                                  "(logit-matching, temperature, ard with soft_weight 1, rslad)")
        images = unlabelled_pool(config.pool, train.input_shape, config.pool_size, config.seed, root=data_root)
        # the labels are placeholders: a label-free loss supplies its own targets (the teacher's predictions)
        return ArrayDataset(images, torch.zeros(len(images), dtype=torch.int64), train.num_classes,
                            "pool:" + "+".join(config.pool), "train", train.mean, train.std)
    if config.pool_size:
        pool = pool.subset(config.pool_size)
    return pool


def split_validation(pool: ArrayDataset, share: float, seed: int) -> tuple[ArrayDataset, torch.Tensor]:
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
    held = max(1, int(len(pool) * share))
    if held >= len(pool):
        raise EdgeRobustError(f"the pool has {len(pool)} images: too few to hold out {share:.0%} for agreement")
    return pool.subset(indices=order[held:]), pool.images[order[:held]]


def distill_model(out: str | Path, teacher: str | Path | RunDir, config: DistillConfig | None = None,
                  train_config: TrainConfig | None = None, *, data: str | None = None, data_root=None,
                  device=None, progress: bool | None = None, recipe: dict | None = None,
                  student_run: str | Path | None = None) -> RunDir:
    """Distil `teacher` into `config.student` (or into the model of `student_run`) as run directory `out`."""
    config = (config or DistillConfig()).check()
    parse_activation(config.activation)  # an unknown activation fails before any work
    train_config = (train_config or TrainConfig()).validate()
    device = resolve_device(device)
    check_output(out)
    check_fresh_output(Path(out), False)
    teacher_run = open_teacher(teacher)
    recorded = data is None or data == teacher_run.dataset_name  # the teacher's data: where and how it was read
    data = data or teacher_dataset(teacher_run)
    data_root = teacher_run.data_root if recorded and data_root is None else data_root
    options = teacher_run.data_options if recorded else {}
    train = load_dataset(data, "train", data_root, **options)
    test = load_dataset(data, "test", data_root, **options)
    check_compatible(teacher_run, train.input_shape, train.num_classes, f"dataset '{data}'")
    teacher_model = teacher_run.load_model()
    if student_run is not None:
        source = RunDir.open(student_run)
        check_compatible(teacher_run, source.input_shape, source.num_classes, f"student run {source.path}")
        student = source.load_model().train()
        info = dict(source.manifest["model"])
    else:
        torch.manual_seed(train_config.seed)
        activation = parse_activation(config.activation)
        student = build_model(config.student, train.input_shape, train.num_classes, train.mean, train.std,
                              activation=activation)
        info = {"spec": config.student, "input_shape": list(train.input_shape), "num_classes": train.num_classes,
                "mean": list(train.mean), "std": list(train.std), **({"activation": activation} if activation else {})}
    loss = build_distillation_loss(config.method, teacher_model.to(device), temperature=config.temperature,
                                   soft_weight=config.soft_weight, eps=config.eps, steps=config.steps,
                                   step_size=config.step_size, seed=config.seed)
    pool = build_pool(config, train, loss.needs_labels, data_root)
    pool, held_out = split_validation(pool, config.validation, config.seed)
    teacher_labels = predict(teacher_model, held_out).argmax(1).cpu()
    stopper = AgreementStopping(held_out, teacher_labels, config.patience)
    with locked(out):
        check_fresh_output(Path(out), False)
        teacher_metrics = measure(teacher_model, test, config)
        run = RunDir.create(out)
        trainer = Trainer(student, pool, replace(train_config, augment=False),
                          LoopSetup(loss=loss, eval_data=test, callbacks=[stopper], checkpoint_path=run.checkpoint_path,
                                    description=f"distill {config.method}"), progress=progress, device=device)
        result = trainer.fit()
        stopper.restore(student)
        student_metrics = measure(student, test, config)
        test_teacher = predict(teacher_model, test.images).argmax(1).cpu()
        agreement = float((predict(student, test.images).argmax(1).cpu() == test_teacher).float().mean())
        run.add_parent(teacher_run, "distilled from")
        teacher_record = {"path": str(teacher_run.path), "sha256": run.manifest["parents"][-1].get("sha256"),
                          "spec": teacher_run.manifest["model"]["spec"],
                          "parameters": count_parameters(teacher_model), **teacher_metrics}
        run.save_model(
            student, info,
            dataset={"train": pool.describe(), "test": test.describe(), "root": str(data_root or ""),
                     "options": options},
            training={"config": asdict(train_config), "loss": loss.describe(), "history": result.history,
                      "stopped_early": result.stopped_early, "best_epoch": stopper.best_epoch + 1,
                      "device": describe_device(trainer.device)},
            distillation={"teacher": teacher_record, "method": config.method, "settings": loss.describe(),
                          "config": asdict(config), "pool": pool.describe(), "held_out": len(held_out),
                          "test_agreement": agreement, "student": student_metrics},
            recipe=recipe or {}, seed=train_config.seed,
            metrics={"test_accuracy": student_metrics["clean_accuracy"],
                     "robust_accuracy": student_metrics["robust_accuracy"], "teacher_agreement": agreement,
                     "parameters": count_parameters(student), "flops": count_flops(student, train.input_shape)},
        )
        if run.checkpoint_path.exists():
            run.checkpoint_path.unlink()  # the finished run needs no resume state
    return run


def temperature_sweep(out: str | Path, teacher: str | Path | RunDir, temperatures: list[float],
                      config: DistillConfig | None = None, train_config: TrainConfig | None = None,
                      **options: Any) -> dict[str, Any]:
    """One `temperature` student per T under out/T-<t>/, and out/sweep.json: accuracy per T (Barmpas 8.7/8.8)."""
    config = replace(config or DistillConfig(), method="temperature", temperatures=None)
    if not temperatures:
        raise EdgeRobustError("a temperature sweep needs at least one temperature")
    check_output(out)
    rows = []
    for t in temperatures:
        run = distill_model(Path(out) / f"T-{t:g}", teacher, replace(config, temperature=float(t)),
                            train_config, **options)
        d = run.manifest["distillation"]
        rows.append({"temperature": float(t), "run": f"T-{t:g}", "test_accuracy": d["student"]["clean_accuracy"],
                     "robust_accuracy": d["student"]["robust_accuracy"], "agreement": d["test_agreement"],
                     "epochs": len(run.manifest["training"]["history"])})
    teacher_record = d["teacher"]
    best = max(rows, key=lambda r: r["test_accuracy"])
    sweep = {"format": "edgerobust-distill-sweep-1", "teacher": teacher_record, "student": config.student,
             "rows": rows, "best": best}
    write_json(Path(out) / SWEEP_NAME, sweep)
    return sweep


__all__ = ["AgreementStopping", "DistillConfig", "distill_model", "open_teacher", "temperature_sweep"]
