"""Ensembles are attacked end to end: one module whose logits are log(mean softmax of the members), so every
gradient and every query goes through all members at once (Marshall's Table C.1 shows what member-by-member
attacks do to the numbers)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import EdgeRobustError


class SoftmaxEnsemble(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise EdgeRobustError("an ensemble needs at least two models")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))
