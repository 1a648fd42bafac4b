"""Structured channel pruning with torch-pruning, and the op counter every stage reports with."""

from __future__ import annotations

from typing import Iterator

import torch
import torch_pruning as tp
from torch import nn


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass at `example_input`'s shape, and parameter count."""
    macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(macs), int(params)


def grouped_convolutions(model: nn.Module) -> dict[nn.Module, int]:
    """Grouped (not depthwise) convolutions and their group count: they must lose channels group by group.

    Without this torch-pruning removes channels unevenly across groups (RegNet's group-width-8
    convolutions) and the pruned layer no longer divides into its groups.
    """
    return {m: m.groups for m in model.modules()
            if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels}


def output_layer(model: nn.Module) -> nn.Module:
    """The layer that produces the logits: its width is the class count, so it is never pruned."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]


def prune_steps(model: nn.Module, example_input: torch.Tensor, ratio: float, importance: str,
                iterative_steps: int, round_to: int) -> Iterator[float]:
    """Remove `ratio` of the channels of every prunable layer group, by weight magnitude (L1 or L2), in place.

    torch-pruning's dependency graph keeps coupled layers consistent (residual additions, depthwise
    convolutions, batch norms, concatenations, squeeze-excitation scales). The output layer is left whole.
    Pruning runs in `iterative_steps` steps of torch-pruning's linear schedule, re-ranking channels before
    each; after each step this yields the channel ratio reached so far, and the caller may fine-tune
    `model` (in place) before asking for the next step.
    """
    model = model.cpu().eval()
    groups = grouped_convolutions(model)
    pruner = tp.pruner.BasePruner(
        model, example_input,
        importance=tp.importance.MagnitudeImportance(p=1 if importance == "l1" else 2),
        pruning_ratio=ratio, iterative_steps=iterative_steps,
        ignored_layers=[output_layer(model)], round_to=round_to,
        in_channel_groups=groups, out_channel_groups=groups)
    for _ in range(iterative_steps):
        model.cpu().eval()  # back from a fine-tune on another device
        pruner.step()
        yield pruner.per_step_pruning_ratio[pruner.current_step]


def prune_channels(model: nn.Module, example_input: torch.Tensor, ratio: float, importance: str,
                   iterative_steps: int, round_to: int) -> nn.Module:
    """`prune_steps` back to back, without fine-tuning between steps; returns the pruned `model`."""
    for _ in prune_steps(model, example_input, ratio, importance, iterative_steps, round_to):
        pass
    return model.cpu().eval()
