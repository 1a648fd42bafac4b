"""Unstructured magnitude pruning: zero the smallest weights of the whole network, keep every shape.

torch.nn.utils.prune holds each pruned layer's weight as `weight_orig` times a fixed `weight_mask` while the
network fine-tunes, so a zeroed weight stays zero; `make_permanent` folds the masks in before the checkpoint
is saved, leaving plain dense `weight` tensors with zeros that every loader and exporter reads as before.
Dense runtimes still multiply by those zeros: the file compresses better, MACs and latency do not change.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import prune

from lib.pruning import output_layer


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    """Every convolution and linear layer but the output layer, which stays dense (as in structured pruning)."""
    last = output_layer(model)
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not last]


def sparsify_steps(model: nn.Module, ratio: float, iterative_steps: int, scope: str = "global") -> Iterator[float]:
    """Zero `ratio` of the weights of the prunable layers by magnitude (L1), in place.

    `scope: global` ranks the weights of all layers together, so layers whose weights are small overall lose
    more (at high ratios whole depthwise convolutions can go); `layer` zeroes `ratio` of every layer's own.
    Like the structured pruner, in `iterative_steps` steps of a linear schedule: step k zeroes the smallest
    surviving weights until k/steps of `ratio` of them are zero (re-ranked after whatever fine-tune the caller
    ran in between) and yields that share. The masks stay on until `make_permanent`; at each yield the model
    can be copied and pickled (to data-parallel workers) until its next forward pass with autograd on.
    """
    layers = prunable_layers(model)
    groups = [layers] if scope == "global" else [[layer] for layer in layers]
    for step in range(1, iterative_steps + 1):
        refresh_masked_weights(model.cpu().eval())  # back from a fine-tune, maybe on another device
        target = ratio * step / iterative_steps
        for group in groups:
            total = sum(m.weight.numel() for m in group)
            masked = sum(int((m.weight_mask == 0).sum()) for m in group if hasattr(m, "weight_mask"))
            # a count, not a share: a share would apply to the weights still unmasked, not to all of them
            prune.global_unstructured([(m, "weight") for m in group], pruning_method=prune.L1Unstructured,
                                      amount=round(target * total) - masked)
        refresh_masked_weights(model)
        yield target


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into its weight (a plain `weight` parameter with zeros again); returns `model`.
    A model without masks is left as it is."""
    for module in model.modules():
        if hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
    return model


def refresh_masked_weights(model: nn.Module) -> nn.Module:
    """Recompute each masked layer's `weight` from `weight_orig` and the mask, outside autograd; returns `model`.

    torch.nn.utils.prune caches that product as a plain attribute at each forward: after a fine-tune it
    can be stale (an earlier epoch's weights than the best one loaded back, on the training device), and
    while it holds an autograd graph the model can be neither copied nor pickled to data-parallel workers.
    """
    for module in model.modules():
        if hasattr(module, "weight_mask"):
            module.weight = (module.weight_orig * module.weight_mask).detach()
    return model


def effective_parameters(model: nn.Module) -> Iterator[tuple[nn.Module, str, torch.Tensor]]:
    """(module, name, tensor) of every parameter as the network computes with it: a masked weight is
    `weight_orig × weight_mask` under its own name."""
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            base = name.removesuffix("_orig")
            mask = getattr(module, f"{base}_mask", None) if base != name else None
            yield module, base, (param if mask is None else param * mask).detach()


def sparsity(model: nn.Module) -> dict:
    """Share of zero weights over the prunable layers and over every parameter, and the non-zero count."""
    layers = set(prunable_layers(model))
    pruned, every = torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64)  # zeros, size
    for module, name, tensor in effective_parameters(model):
        counts = torch.tensor([tensor.numel() - int(tensor.count_nonzero()), tensor.numel()])
        every += counts
        if module in layers and name == "weight":
            pruned += counts
    return {"pruned_layers": round(int(pruned[0]) / max(int(pruned[1]), 1), 6),
            "all_parameters": round(int(every[0]) / int(every[1]), 6),
            "nonzero_params": int(every[1] - every[0])}
