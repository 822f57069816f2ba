"""Adversarial attacks: a registry of batched attacks in pixel space [0,1] (L∞ and L2)."""
from . import pgd  # noqa: F401  (each import registers its attacks)
from .base import ATTACKS, NORMS, Attack, get_attack, project, random_start, steepest_step
from .pgd import PGD, loss_gradient

__all__ = ["ATTACKS", "NORMS", "PGD", "Attack", "get_attack", "loss_gradient", "project", "random_start",
           "steepest_step"]
