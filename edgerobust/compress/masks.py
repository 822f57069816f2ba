"""Hard pruning and masked retraining: pruned weights, their gradients and optimiser state stay exactly zero."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..training.distributed import unwrap
from ..training.loop import Callback


def masked_params(model: nn.Module, masks: dict[str, Tensor]) -> list[tuple[nn.Parameter, Tensor]]:
    params = dict(unwrap(model).named_parameters())
    missing = sorted(set(masks) - set(params))
    if missing:
        raise CheckpointError(f"pruning masks name parameters the model lacks ({', '.join(missing[:3])}); "
                              "the masks were made for another architecture")
    return [(params[name], mask.to(params[name].device)) for name, mask in masks.items()]


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """Hard pruning: zero every masked-out weight in place."""
    for param, mask in masked_params(model, masks):
        param.mul_(mask)
    return model


@torch.no_grad()
def zero_optimizer_state(optimizer: torch.optim.Optimizer, pairs: list[tuple[nn.Parameter, Tensor]]) -> None:
    """Zero momentum buffers and Adam moments at pruned positions so no stale update revives a weight."""
    for param, mask in pairs:
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, Tensor) and value.shape == param.shape:
                value.mul_(mask)


def density(masks: dict[str, Tensor]) -> float:
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return kept / total if total else 1.0


class MaskCallback(Callback):
    """Keeps a pruned network pruned through training.

    Gradients are masked by tensor hooks before the optimiser sees them (so weight decay and momentum of a pruned
    weight stay zero); weights and optimiser state are masked again after every step as a guarantee.
    """

    def __init__(self, masks: dict[str, Tensor]):
        self.masks = {name: mask.bool() for name, mask in masks.items()}
        self._hooks: list[Any] = []
        self._pairs: list[tuple[nn.Parameter, Tensor]] = []

    def on_train_start(self, trainer) -> None:
        self.remove()
        self._pairs = masked_params(trainer.model, self.masks)
        for param, mask in self._pairs:
            self._hooks.append(param.register_hook(lambda grad, mask=mask: grad * mask))
        self._enforce(trainer.optimizer)

    def on_after_step(self, trainer) -> None:
        self._enforce(trainer.optimizer)

    @torch.no_grad()
    def _enforce(self, optimizer: torch.optim.Optimizer) -> None:
        for param, mask in self._pairs:
            param.mul_(mask)
        zero_optimizer_state(optimizer, self._pairs)

    def remove(self) -> None:
        """Drop the gradient hooks (call when training is over)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "masks" in state:
            self.masks = {name: mask.bool() for name, mask in state["masks"].items()}
