"""Clean accuracy and loss of a model over a dataset."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..compute_device import to_model
from ..data import ArrayDataset, iterate_batches
from ..models.mode import eval_mode


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    with eval_mode(model):
        outs = [model(to_model(model, images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


@torch.no_grad()
def evaluate_clean(model: nn.Module, dataset: ArrayDataset, batch_size: int = 512) -> dict[str, float]:
    correct, loss_sum = 0, 0.0
    with eval_mode(model):
        for x, y in iterate_batches(dataset, batch_size):
            x, y = to_model(model, x, y)  # CPU batches to a model on another device
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    n = max(len(dataset), 1)
    return {"accuracy": correct / n, "loss": loss_sum / n}
