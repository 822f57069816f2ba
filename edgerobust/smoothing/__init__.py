"""Randomized smoothing (Cohen et al. 2019; Song's thesis): PREDICT, CERTIFY and their statistics on any runtime."""
from ..config import SmoothConfig
from .api import ASSUMPTIONS, SMOOTHING_FILE, SmoothingError, smooth_run
from .certify import certify_points, summarize
from .statistics import (
                         ABSTAIN,
                         average_certified_radius,
                         certified_accuracy,
                         certify_counts,
                         lower_confidence_bound,
                         predict_counts,
                         radius_ceiling,
)

__all__ = ["ABSTAIN", "ASSUMPTIONS", "SMOOTHING_FILE", "SmoothConfig", "SmoothingError", "average_certified_radius",
           "certified_accuracy", "certify_counts", "certify_points", "lower_confidence_bound", "predict_counts",
           "radius_ceiling", "smooth_run", "summarize"]
