"""Model zoo: a registry of classifiers that take [0,1] pixels (normalisation is their first layer)."""
from . import barmpas  # noqa: F401  (each import registers its models)
from .normalize import Normalize, NormalizedClassifier
from .registry import MODELS, ModelSpec, build_model, check_input_shape, count_flops, count_parameters

__all__ = ["MODELS", "ModelSpec", "Normalize", "NormalizedClassifier", "build_model", "check_input_shape",
           "count_flops", "count_parameters"]
