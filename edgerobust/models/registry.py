"""The model registry: a spec such as `scnn2:16-32` -> an nn.Module taking [0,1] pixels.

A builder is `fn(input_shape, num_classes, *int_args) -> nn.Module` (the body, without normalisation). A spec that
is an import path (`package.module:factory`) or an installed entry point's name builds the user's own model
(external.py); `source` (a dict given to `build_model`) receives the record that rebuilds it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..compute_device import placement
from ..errors import EdgeRobustError, ShapeError
from ..registry import Registry
from .external import build_external, is_external
from .mode import eval_mode
from .normalize import NormalizedClassifier
from .pca import PCAProjection, check_pca_record

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    args: tuple[int, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        name, _, rest = spec.partition(":")
        MODELS.get(name)  # unknown names fail here, listing the valid ones
        if not rest:
            return cls(name)
        try:
            args = tuple(int(a) for a in rest.split("-"))
        except ValueError:
            raise EdgeRobustError(f"model spec '{spec}': arguments after ':' must be integers joined by '-', "
                                  "e.g. scnn2:16-32") from None
        if min(args) < 1:
            raise EdgeRobustError(f"model spec '{spec}': every width must be at least 1, e.g. scnn2:16-32")
        return cls(name, args)

    def __str__(self) -> str:
        return self.name + (":" + "-".join(map(str, self.args)) if self.args else "")


def is_user_model(spec: str) -> bool:
    """An import path or an installed entry point's name, not a zoo spec (the zoo's names win; entry points are only
    looked up for a name the zoo lacks)."""
    return spec.partition(":")[0] not in MODELS and is_external(spec)


def spec_text(spec: str) -> str:
    """A spec as runs record it: a zoo spec normalised (`scnn2:16-32`), a user model's import path or name as given."""
    return spec if is_user_model(spec) else str(ModelSpec.parse(spec))


def build_model(spec: str | ModelSpec, input_shape: Sequence[int], num_classes: int,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                check_shape: bool = True, kwargs: Mapping[str, Any] | None = None,
                source: dict[str, Any] | None = None, activation: str | dict | None = None,
                pca: PCAProjection | Mapping[str, Any] | None = None) -> NormalizedClassifier:
    """`spec` wrapped in its normalisation (mean/std; none = identity). `kwargs` go to a user model's factory
    (external.py), whose origin record is written into `source` when given. `activation` (a name such as kaf, or
    the manifest's {"name", "options"}) replaces every ReLU. `pca`: Song's fixed PCA first layer (models/pca.py),
    a fitted `PCAProjection` or the manifest's record (an empty layer of its shape, filled by the run's weights)."""
    external = isinstance(spec, str) and is_user_model(spec)
    if not external:
        spec = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
        if kwargs:
            raise EdgeRobustError(f"model '{spec}' is from the zoo and takes no [model] kwargs; its widths go after "
                                  "the colon, e.g. scnn2:16-32")
    input_shape = tuple(int(s) for s in input_shape)
    channels = input_shape[0]
    mean = tuple(mean) if mean else (0.0,) * channels
    std = tuple(std) if std else (1.0,) * channels
    if len(mean) != channels or len(std) != channels:
        raise ShapeError(f"normalisation has {len(mean)} channels but the input has {channels}")
    if num_classes < 2 or min(input_shape, default=0) < 1:
        raise ShapeError(f"model '{spec}' needs at least 2 classes and a positive input shape, got {num_classes} "
                         f"classes and shape {input_shape}")
    try:
        if external:
            body, record = build_external(str(spec), input_shape, num_classes, kwargs)
            if source is not None:
                source.update(record)
        else:
            body = MODELS.get(spec.name)(input_shape, num_classes, *spec.args)
    except TypeError as exc:
        raise EdgeRobustError(f"model '{spec}': wrong arguments ({exc})") from None
    except (MemoryError, RuntimeError) as exc:  # torch reports a failed allocation as RuntimeError
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc):
            raise
        raise ShapeError(f"model '{spec}' for inputs {input_shape} is too large to allocate; choose smaller "
                         "widths") from None
    if pca is not None and not isinstance(pca, PCAProjection):
        dims = math.prod(input_shape)
        problem = check_pca_record(pca, dims)
        if problem:
            raise EdgeRobustError(f"model '{spec}': its pca record must be {problem}")
        pca = PCAProjection.empty(dims, int(pca["components"]))
    model = NormalizedClassifier(body, mean, std, pca)
    if activation is not None:
        from .activations import swap_activations  # late: activations need this module's zoo built first

        swap_activations(model, activation, input_shape)
    if check_shape:
        check_input_shape(model, input_shape, num_classes, str(spec))
    return model


def check_input_shape(model: nn.Module, input_shape: Sequence[int], num_classes: int, name: str = "model") -> None:
    """Run one dummy forward pass so an impossible input shape fails with one clear line."""
    try:
        with torch.no_grad(), eval_mode(model):
            where = placement(model)
            out = model(torch.zeros(1, *input_shape, device=where.device, dtype=where.dtype))
    except MemoryError:
        raise ShapeError(f"{name}: inputs of shape {tuple(input_shape)} are too large to allocate") from None
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0][:160]
        raise ShapeError(f"{name} cannot take inputs of shape {tuple(input_shape)} ({reason}); "
                         "choose a model built for this input size") from None
    if out.shape != (1, num_classes):
        raise ShapeError(f"{name} outputs shape {tuple(out.shape)} for one input; expected (1, {num_classes}) logits")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flop_counter(model: nn.Module, input_shape: Sequence[int]):
    """torch's own FlopCounterMode after one eval-mode forward of a zero input (the model's mode is restored)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    where = placement(model)
    with counter, torch.no_grad(), eval_mode(model):
        model(torch.zeros(1, *input_shape, device=where.device, dtype=where.dtype))
    return counter


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs for one input (multiply-add = 2 FLOPs), counted by torch's own FlopCounterMode."""
    return int(flop_counter(model, input_shape).get_total_flops())
