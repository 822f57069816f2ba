"""One training loop with pluggable losses and callbacks; LR schedules; clean metrics; adversarial training."""
from . import distill_losses  # noqa: F401 - registers the distillation losses
from .adversarial import FGSMRSLoss, PGDAdversarialLoss, TradesLoss, build_training_loss
from .certified import CrownIBPLoss, IBPLoss
from .eps_schedule import EPS_SCHEDULES, EpsSchedule
from .loop import Callback, LoopSetup, TrainConfig, Trainer, TrainResult, make_optimizer
from .losses import LOSSES, LossOutput, NaturalLoss, StepState, TrainingLoss
from .metrics import evaluate_clean, predict
from .overfit_guard import CatastrophicOverfittingGuard
from .schedules import LR_SCHEDULES, learning_rate
from .smoothing_losses import MACER, Consistency, GaussianAugmentation, GeneralizedConsistency

__all__ = ["CrownIBPLoss", "IBPLoss",
           "EPS_SCHEDULES", "CatastrophicOverfittingGuard", "EpsSchedule", "FGSMRSLoss", "PGDAdversarialLoss",
           "TradesLoss", "build_training_loss",
           "Callback", "LoopSetup", "LOSSES", "LR_SCHEDULES", "LossOutput", "NaturalLoss", "StepState", "TrainConfig",
           "TrainResult", "Trainer", "TrainingLoss", "evaluate_clean", "learning_rate", "make_optimizer", "predict",
           "MACER", "Consistency", "GaussianAugmentation", "GeneralizedConsistency"]
