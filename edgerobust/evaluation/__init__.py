"""Robustness evaluation: the standard suite, robustness curves, transfer, minimal perturbations, masking checks."""
from .suite import SuiteResult, robust_accuracy, standard_attacks, standard_suite

__all__ = ["SuiteResult", "robust_accuracy", "standard_attacks", "standard_suite"]
