"""One training loop with pluggable losses and callbacks; LR schedules; clean metrics."""
from .losses import LOSSES, LossOutput, NaturalLoss, StepState, TrainingLoss
from .loop import Callback, Trainer, TrainConfig, TrainResult, make_optimizer
from .metrics import evaluate_clean, predict
from .schedules import LR_SCHEDULES, learning_rate

__all__ = ["Callback", "LOSSES", "LR_SCHEDULES", "LossOutput", "NaturalLoss", "StepState", "TrainConfig",
           "TrainResult", "Trainer", "TrainingLoss", "evaluate_clean", "learning_rate", "make_optimizer", "predict"]
