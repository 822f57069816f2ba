"""Bringing in what users already have: weights trained elsewhere (weights.py)."""
from .weights import import_weights, read_state_dict

__all__ = ["import_weights", "read_state_dict"]
