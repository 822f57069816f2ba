"""Transfer matrix (Marshall Alg. 3): an adversarial batch made once on each source model (white-box), then
evaluated on every target. Row = source, column = target; the diagonal is each model's white-box accuracy."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks import Attack
from ..errors import EdgeRobustError
from .core import attack_points, check_inputs, predict_labels


def transfer_matrix(models: dict[str, nn.Module], images: torch.Tensor, labels: torch.Tensor, attack: Attack,
                    batch_size: int = 256) -> dict[str, Any]:
    check_inputs(images, labels)
    if len(models) < 2:
        raise EdgeRobustError("a transfer matrix needs at least two models (pass --transfer RUN2)")
    names = list(models)
    everything = torch.arange(len(images))
    matrix = []
    for source in names:
        adversarial = attack_points(models[source], images, labels, attack, everything, batch_size).adversarial
        matrix.append([(predict_labels(models[target], adversarial, labels, batch_size) == labels.cpu())
                       .float().mean().item() for target in names])
    return {"models": names, "attack": attack.describe(), "accuracy": matrix,
            "note": "row = source the examples were made on, column = target evaluated; diagonal = white-box"}
