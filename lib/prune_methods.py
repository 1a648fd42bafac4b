"""The methods of `prune.method`, one object each: how the student is pruned step by step, and how its size is
reported. The prune stage asks the method; it does not branch on its name.

Structured pruning removes channels, so parameters and MACs fall. Unstructured pruning zeroes single weights
and keeps every tensor's shape: its parameters are counted as non-zero weights, and its MACs are the dense
model's, since dense runtimes (ONNX Runtime, TFLite) multiply by the zeros too.
"""

from __future__ import annotations

from typing import ClassVar, Iterator

import torch
from torch import nn

from lib.config import PruneConfig
from lib.pruning import count_macs_params, prune_steps
from lib.sparsity import sparsify_steps, sparsity


class Structured:
    name: ClassVar[str] = "structured"
    macs_note: ClassVar[dict] = {}

    def steps(self, model: nn.Module, example: torch.Tensor, cfg: PruneConfig) -> Iterator[float]:
        """Prune `model` in place along the linear schedule of `cfg`; yields the ratio reached at each step."""
        return prune_steps(model, example, cfg.ratio, cfg.importance, cfg.iterative_steps, cfg.round_to)

    def step_figures(self, model: nn.Module, example: torch.Tensor) -> dict:
        """One step's size, for metrics/prune.json's `steps`."""
        macs, params = count_macs_params(model, example)
        return {"params": params, "macs": macs}

    def params(self, before: int, after: int, zeros: dict) -> dict:
        """Parameters before → after; `zeros` is `lib.sparsity.sparsity` of the saved model."""
        return {"before": before, "after": after, "removed_fraction": round(1 - after / before, 6)}


class Unstructured(Structured):
    name = "unstructured"
    macs_note = {"note": "unchanged: dense runtimes (ONNX Runtime, TFLite) multiply by the zeroed weights too"}

    def steps(self, model: nn.Module, example: torch.Tensor, cfg: PruneConfig) -> Iterator[float]:
        return sparsify_steps(model, cfg.ratio, cfg.iterative_steps, cfg.scope)

    def step_figures(self, model: nn.Module, example: torch.Tensor) -> dict:
        macs, _ = count_macs_params(model, example)
        zeros = sparsity(model)
        return {"nonzero_params": zeros["nonzero_params"], "sparsity": zeros["pruned_layers"], "macs": macs}

    def params(self, before: int, after: int, zeros: dict) -> dict:
        return {"before": before, "nonzero_after": zeros["nonzero_params"], "stored_after": after}


METHODS = {method.name: method for method in (Structured(), Unstructured())}


def size_figures(method: Structured, saved: nn.Module, example: torch.Tensor, macs_before: int,
                 params_before: int) -> dict:
    """Parameters and MACs before → after, and the share of zero weights, of the saved pruned student."""
    macs_after, params_after = count_macs_params(saved, example)
    zeros = sparsity(saved)
    return {"params": method.params(params_before, params_after, zeros),
            "macs": {"before": macs_before, "after": macs_after,
                     "removed_fraction": round(1 - macs_after / macs_before, 6), **method.macs_note},
            "sparsity": {"pruned_layers": zeros["pruned_layers"], "all_parameters": zeros["all_parameters"]}}
