"""Lipschitz control while training (Peconi, Lipschitz chapter): the Σ log σ_i regulariser and spectral
normalisation, both on the layers' operator norms (models/lipschitz.py), not on reshaped kernels.

Each keeps one persistent power-iteration vector per layer (checkpointed, so a resumed run repeats the
uninterrupted one) and advances it by one step per training step, as Miyato et al.'s spectral normalisation does.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.lipschitz import conv_operator
from ..models.probe import input_shapes
from .loop import Callback


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


class _OperatorVectors(Callback):
    """One power-iteration vector per Conv2d / Linear, on the layer's input shape and device."""

    def __init__(self):
        self.vectors: dict[str, torch.Tensor] = {}
        self.layers: list[tuple[str, nn.Module]] = []

    def on_train_start(self, trainer) -> None:
        model = trainer.model
        shapes = input_shapes(model, trainer.train_data.input_shape)
        self.layers = [(n, m) for n, m in _layers(model) if m in shapes]
        g = torch.Generator().manual_seed(trainer.config.seed)
        for name, m in self.layers:
            if name not in self.vectors:  # drawn on the CPU, then moved: every device starts alike
                v = torch.randn(1, *shapes[m], generator=g)
                self.vectors[name] = (v / v.norm()).to(m.weight)
            else:
                self.vectors[name] = self.vectors[name].to(m.weight)

    def sigma(self, name: str, m: nn.Module, differentiable: bool) -> torch.Tensor:
        """One power step (no gradient), then σ = ‖A v‖ with the gradient of the weights when asked."""
        forward, adjoint = (conv_operator(m) if isinstance(m, nn.Conv2d)
                            else (lambda x: F.linear(x, m.weight), lambda y, s: y @ m.weight))
        v = self.vectors[name]
        with torch.no_grad():
            w = adjoint(forward(v), v.shape[1:])
            if w.norm() > 0:
                v = w / w.norm()
            self.vectors[name] = v
        with torch.set_grad_enabled(differentiable):
            return forward(v).norm()

    def state_dict(self) -> dict[str, Any]:
        return {"vectors": {k: v.detach().cpu() for k, v in self.vectors.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vectors = dict(state.get("vectors", {}))


class LipschitzPenalty(_OperatorVectors):
    """weight · Σ_i log σ_i over every Conv2d / Linear: pushes the global product bound down."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = weight

    def penalty(self, trainer) -> torch.Tensor | None:
        logs = [torch.log(self.sigma(name, m, True)) for name, m in self.layers]
        return self.weight * torch.stack(logs).sum() if logs else None

    def describe(self) -> dict:
        return {"name": "lipschitz-penalty", "weight": self.weight}


class SpectralNormalisation(_OperatorVectors):
    """After every step, W ← W · c / σ for each Conv2d / Linear whose operator norm σ exceeds c."""

    def __init__(self, max_norm: float):
        super().__init__()
        self.max_norm = max_norm

    def on_after_step(self, trainer) -> None:
        with torch.no_grad():
            for name, m in self.layers:
                sigma = float(self.sigma(name, m, False))
                if sigma > self.max_norm:
                    m.weight.mul_(self.max_norm / sigma)

    def describe(self) -> dict:
        return {"name": "spectral-normalisation", "max_norm": self.max_norm}


def lipschitz_callbacks(penalty: float, spectral_norm: float) -> list[Callback]:
    """The callbacks [train] lipschitz_penalty / spectral_norm ask for (0 = off)."""
    return ([LipschitzPenalty(penalty)] if penalty > 0 else []) + (
        [SpectralNormalisation(spectral_norm)] if spectral_norm > 0 else [])
