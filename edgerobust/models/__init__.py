"""Model zoo: a registry of classifiers that take [0,1] pixels (normalisation is their first layer)."""
# Each import registers its models.
from . import barmpas, barmpas_mp, lenet, mobilenetv2, preact_resnet, resnet_cifar, vgg  # noqa: F401
from .external import ENTRY_POINT_GROUP, ModelImportError, entry_points, is_external
from .mode import eval_mode
from .normalize import Normalize, NormalizedClassifier
from .registry import (
    MODELS,
    ModelSpec,
    build_model,
    check_input_shape,
    count_flops,
    count_parameters,
    is_user_model,
    spec_text,
)

__all__ = ["ENTRY_POINT_GROUP", "MODELS", "ModelImportError", "ModelSpec", "Normalize", "NormalizedClassifier",
           "build_model", "check_input_shape", "count_flops", "count_parameters", "entry_points", "eval_mode",
           "is_external", "is_user_model", "spec_text"]
