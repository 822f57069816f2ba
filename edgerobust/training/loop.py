"""The one training loop. Losses and callbacks plug in; the loop owns optimisation, checkpoints and resume."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compute_device import Placement, placement, resolve_device
from ..config import TrainConfig
from ..data import NO_AUGMENT, ArrayDataset, Augment, iterate_batches, num_batches
from ..errors import CheckpointError, EdgeRobustError
from ..io import load_torch, save_torch
from ..progress import progress_bar
from . import distributed as dist_util
from .losses import LossOutput, NaturalLoss, StepState, TrainingLoss, needs_labels
from .metrics import evaluate_clean
from .schedules import ScheduleSettings, learning_rate

OPTIMIZERS = ("sgd", "adam")


class Callback:
    """Hooks into the loop. State returned by `state_dict` is checkpointed, so resume restores it."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...
    def penalty(self, trainer: Trainer) -> torch.Tensor | None:
        """An extra term added to the loss of every step (e.g. the ADMM proximal penalty)."""
        return None
    def on_after_step(self, trainer: Trainer) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None: ...
    def state_dict(self) -> dict[str, Any]:
        return {}
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: str | None = None

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov and config.momentum > 0)


CHECKPOINT_KEYS = ("epoch", "global_step", "model", "optimizer", "generator", "torch_rng", "history", "config",
                   "callbacks")


@dataclass
class LoopSetup:
    """What the loop runs besides the model, its data and its config, passed whole to `Trainer`."""
    loss: TrainingLoss | None = None  # default: natural cross-entropy
    eval_data: ArrayDataset | None = None  # clean test metrics after every epoch
    callbacks: Sequence[Callback] = ()
    checkpoint_path: str | Path | None = None  # written after every epoch; `fit(resume=True)` reads it
    augment: Augment | None = None  # applied when config.augment
    description: str = "train"  # the progress bar's label
    distributed: dist_util.DistributedContext | None | bool = None  # None: join torchrun's group if any; False: never
    dtype: torch.dtype | None = None  # e.g. float64 for the exactness tests


class Trainer:
    def __init__(self, model: nn.Module, train_data: ArrayDataset, config: TrainConfig,
                 setup: LoopSetup | None = None, *, progress: bool | None = None,
                 device: str | torch.device | None = None):
        setup = setup or LoopSetup()
        distributed, loss, augment = setup.distributed, setup.loss, setup.augment
        self.dist = dist_util.current() if distributed is None else (distributed or None)
        # one device for the model and every batch: the rank's under DDP, else `device` (None: where the model is)
        if self.dist is not None:
            self.device = self.dist.device
        else:
            self.device = resolve_device(device) if device is not None else placement(model).device
        model.to(device=self.device, dtype=setup.dtype)
        self.placement: Placement = placement(model)
        self.model = model
        # what the loss calls: the DDP wrapper under torchrun (gradients averaged across ranks), else the model
        self.train_model: nn.Module = dist_util.wrap(model, self.dist) if self.dist is not None else model
        self.train_data = train_data
        self.eval_data = setup.eval_data
        self.config = config.validate()
        self.loss = loss or NaturalLoss()
        if hasattr(self.loss, "to"):  # a loss holding modules (a teacher) computes where the model does
            self.loss.to(self.device)
        if train_data.labels is None and needs_labels(self.loss):
            raise EdgeRobustError(f"the '{getattr(self.loss, 'name', 'training')}' loss needs labels and "
                                  f"{train_data.name} has none; choose a labelled dataset or a loss that makes "
                                  "its own targets")
        from .lipschitz_control import lipschitz_callbacks  # late: its callbacks subclass this module's Callback

        self.callbacks = list(setup.callbacks) + lipschitz_callbacks(self.config.lipschitz_penalty,
                                                                     self.config.spectral_norm)
        self.qat = None
        if self.config.qat:  # fake quantization attached before the loss first runs the model (training/qat.py)
            from .qat import QatCallback, QatSettings

            if len(train_data) == 0:
                raise EdgeRobustError(f"quantization-aware training needs training images and {train_data.name} "
                                      "has none")
            steps = num_batches(train_data, config.batch_size)
            freeze = self.config.qat_freeze_step or max((config.epochs - 1) * steps, config.epochs * steps // 2)
            self.qat = QatCallback(QatSettings(freeze_step=freeze))
            self.qat.attach(model, self.placement.put(train_data.images[:2]))
            self.callbacks.append(self.qat)
        self.checkpoint_path = Path(setup.checkpoint_path) if setup.checkpoint_path else None
        self.augment = augment if (augment is not None and config.augment) else NO_AUGMENT
        self.progress = progress if self.dist is None or self.dist.is_main else False
        self.description = setup.description
        self.optimizer = make_optimizer(model, config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.result = TrainResult()
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.stop_reason: str | None = None

    # -- checkpoints -------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": "edgerobust-train-checkpoint-1",
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.result.history,
            "config": asdict(self.config),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "stop_reason": self.stop_reason,
        }

    def save_checkpoint(self) -> None:
        if self.checkpoint_path and (self.dist is None or self.dist.is_main):
            save_torch(self.checkpoint_path, self.checkpoint_state())

    def load_checkpoint(self, path: str | Path) -> None:
        state = load_torch(path)
        if not isinstance(state, dict) or state.get("format") != "edgerobust-train-checkpoint-1":
            raise CheckpointError(f"{path} is not an edgerobust training checkpoint")
        missing = [k for k in CHECKPOINT_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"checkpoint {path} is damaged: it lacks {', '.join(missing)}; start the run "
                                  "again without --resume (or restore the file)")
        if not isinstance(state["config"], dict) or state["config"] != asdict(self.config):
            saved = state["config"] if isinstance(state["config"], dict) else {}
            changed = sorted(k for k in {*saved, *asdict(self.config)} if saved.get(k) != asdict(self.config).get(k))
            raise CheckpointError(f"cannot resume from {path}: training settings differ ({', '.join(changed)}); "
                                  "resume with the same settings or start a new run")
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, TypeError, AttributeError):
            raise CheckpointError(f"checkpoint {path} was written for another architecture") from None
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.epoch = int(state["epoch"])
            self.global_step = int(state["global_step"])
            self.result.history = list(state["history"])
            self.stop_reason = state.get("stop_reason")
            for cb, cb_state in zip(self.callbacks, state["callbacks"], strict=False):
                cb.load_state_dict(cb_state)
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as exc:
            raise CheckpointError(f"checkpoint {path} is damaged ({type(exc).__name__}: {exc}); start the run "
                                  "again without --resume (or restore the file)") from None

    # -- the loop -------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        if resume:
            if not (self.checkpoint_path and self.checkpoint_path.is_file()):
                raise CheckpointError(f"nothing to resume: no checkpoint at {self.checkpoint_path}")
            self.load_checkpoint(self.checkpoint_path)
        else:
            torch.manual_seed(self.config.seed)
        for cb in self.callbacks:
            cb.on_train_start(self)
        cfg = self.config
        batches = num_batches(self.train_data, cfg.batch_size)
        if self.dist is not None:
            last = len(self.train_data) % cfg.batch_size
            if cfg.batch_size < self.dist.world_size or 0 < last < self.dist.world_size:
                raise EdgeRobustError(f"with {self.dist.world_size} processes every batch needs at least "
                                      f"{self.dist.world_size} examples (batch size {cfg.batch_size}, last batch "
                                      f"{last or cfg.batch_size}); choose another --batch-size")
        with progress_bar(self.progress) as bars:
            task = bars.add_task(self.description, total=cfg.epochs * batches,
                                 completed=self.epoch * batches, status="")
            while self.epoch < cfg.epochs and self.stop_reason is None:
                metrics = self._run_epoch(bars, task, batches)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, self.epoch, metrics)
                self.result.history.append(metrics)
                self.epoch += 1
                self.save_checkpoint()
                bars.update(task, status=_status(metrics))
        self.result.stopped_early = self.stop_reason
        return self.result

    def _run_epoch(self, bars, task, batches: int) -> dict[str, float]:
        cfg = self.config
        epoch = self.epoch
        self.train_model.train()
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        started = time.perf_counter()
        seen = correct = 0
        loss_sum = 0.0
        extra: dict[str, float] = {}
        for i, (x, y) in enumerate(iterate_batches(self.train_data, cfg.batch_size, shuffle=True,
                                                   generator=self.generator, augment=self.augment)):
            state = StepState(epoch, self.global_step, epoch + i / batches, cfg.epochs)
            schedule = ScheduleSettings(cfg.lr, cfg.epochs, cfg.step_size, cfg.gamma)
            lr = learning_rate(cfg.schedule, schedule, state.progress)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            share = 1.0
            if self.dist is not None:
                # every rank drew the same global batch; each trains on its shard, weighted so that DDP's
                # average of the ranks' gradients is the gradient of the global batch's mean loss
                shard = self.dist.shard(len(x))
                share = (shard.stop - shard.start) * self.dist.world_size / len(x)
                state = replace(state, rows=(shard.start, len(x)))  # random starts as the whole batch's
                x, y = x[shard], (None if y is None else y[shard])
            x, y = self.placement.put(x), (None if y is None else self.placement.put(y))
            out: LossOutput = self.loss(self.train_model, x, y, state)
            loss = out.loss * share if share != 1.0 else out.loss
            for cb in self.callbacks:
                term = cb.penalty(self)
                if term is not None:
                    loss = loss + term
            if not torch.isfinite(loss):
                raise EdgeRobustError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); "
                                      "lower the learning rate")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            for cb in self.callbacks:
                cb.on_after_step(self)
            self.global_step += 1
            seen += len(x)
            loss_sum += out.loss.item() * len(x)
            targets = y if out.targets is None else out.targets  # a loss may supply its own (a teacher's)
            if targets is not None:  # without labels or targets there is no training accuracy to count
                correct += (out.logits.argmax(1) == targets).sum().item()
            for key, value in (out.metrics or {}).items():
                extra[key] = extra.get(key, 0.0) + value * len(x)
            bars.advance(task)
        if self.dist is not None:
            totals = dist_util.all_reduce_sums({"seen": seen, "loss_sum": loss_sum, "correct": correct,
                                                **{f"extra.{k}": v for k, v in extra.items()}}, self.dist)
            seen, loss_sum, correct = int(totals["seen"]), totals["loss_sum"], totals["correct"]
            extra = {k[len("extra."):]: v for k, v in totals.items() if k.startswith("extra.")}
        elapsed = time.perf_counter() - started
        metrics = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                   "seconds": elapsed, "images_per_second": seen / elapsed if elapsed > 0 else math.inf}
        if self.train_data.labels is None:
            del metrics["train_accuracy"]
        metrics.update({key: value / seen for key, value in extra.items()})
        if self.eval_data is not None and self.eval_data.labels is not None:
            clean = None
            if self.dist is None or self.dist.is_main:
                clean = evaluate_clean(self.model, self.eval_data, cfg.eval_batch_size)
            if self.dist is not None:
                clean = dist_util.broadcast(clean, self.dist)
            metrics.update(test_loss=clean["loss"], test_accuracy=clean["accuracy"])
        return metrics


def _status(metrics: dict[str, float]) -> str:
    parts = [f"loss {metrics['train_loss']:.3f}"]
    if "train_accuracy" in metrics:
        parts.append(f"acc {metrics['train_accuracy']:.3f}")
    if "test_accuracy" in metrics:
        parts.append(f"test {metrics['test_accuracy']:.3f}")
    return " ".join(parts)
