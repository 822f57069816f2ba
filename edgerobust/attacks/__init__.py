"""Adversarial attacks: a registry of batched attacks in pixel space [0,1] (L∞ and L2)."""
from . import apgd, cw, deepfool, fab, fgs_search, mim, pgd, square  # noqa: F401  (each import registers its attacks)
from .apgd import APGD, dlr_loss, targeted_dlr_loss
from .base import (
    ATTACKS,
    NORMS,
    Attack,
    MinimalAttack,
    check_logits,
    checked_logits,
    get_attack,
    perturbation_norm,
    project,
    random_start,
    steepest_step,
)
from .fab import FAB, hyperplane_box_step
from .pgd import PGD, loss_gradient
from .square import Square

__all__ = ["APGD", "ATTACKS", "FAB", "NORMS", "PGD", "Attack", "MinimalAttack", "Square", "check_logits",
           "checked_logits", "dlr_loss", "get_attack", "hyperplane_box_step", "loss_gradient", "perturbation_norm",
           "project", "random_start", "steepest_step", "targeted_dlr_loss"]
