"""Structured channel pruning with torch-pruning, and the op counter every stage reports with."""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass at `example_input`'s shape, and parameter count."""
    macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(macs), int(params)


def prune_channels(model: nn.Module, example_input: torch.Tensor, ratio: float, importance: str,
                   iterative_steps: int, round_to: int) -> nn.Module:
    """Remove `ratio` of the channels of every prunable layer group, by weight magnitude (L1 or L2).

    torch-pruning's dependency graph keeps coupled layers consistent (residual additions, depthwise
    convolutions, batch norms). The classifier's output layer is left whole: its width is the class count.
    Pruning runs in `iterative_steps` equal steps, re-ranking channels after each.
    """
    model = model.cpu().eval()
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.BasePruner(
        model, example_input,
        importance=tp.importance.MagnitudeImportance(p=1 if importance == "l1" else 2),
        pruning_ratio=ratio, iterative_steps=iterative_steps,
        ignored_layers=[classifier], round_to=round_to)
    for _ in range(iterative_steps):
        pruner.step()
    return model
