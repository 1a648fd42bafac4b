"""Ensemble teachers: several trained networks as one, and the architecture name a checkpoint records."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ENSEMBLE_JOIN = "+"  # an ensemble's architecture name: its members' names joined, e.g. resnet18+densenet121


def ensemble_arch(names: Sequence[str]) -> str:
    """The architecture name a checkpoint records for these members (one name: that network alone)."""
    return ENSEMBLE_JOIN.join(names)


def ensemble_members(arch: str) -> list[str]:
    return arch.split(ENSEMBLE_JOIN)


class Ensemble(nn.Module):
    """Several trained networks as one: T·log of the mean of the members' softmax(z_i / T).

    softmax(output / T) is then the members' averaged probabilities at temperature T, not the softmax of
    averaged logits. At T = 1 (inference, ONNX export, benchmark) the output is the log of the averaged
    probabilities; at the distillation temperature, softmax(output / T) gives the averaged soft targets.
    """

    def __init__(self, members: Sequence[nn.Module], temperature: float = 1.0):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([F.log_softmax(member(x) / self.temperature, dim=1) for member in self.members])
        return self.temperature * (torch.logsumexp(log_probs, dim=0) - math.log(len(self.members)))

    def tempered(self, temperature: float) -> "Ensemble":
        """The same member networks (shared, not copied), averaged at `temperature`."""
        return Ensemble(list(self.members), temperature)
