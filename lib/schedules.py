"""The learning-rate schedule of a training run and the moving average of its weights (`train.schedule`,
`train.warmup_epochs`, `train.ema_decay`).

Both are stepped once per optimizer step by `lib.training`. With the defaults (one-cycle, no average)
nothing here draws a random number or copies the model, so the default recipe trains as it did before
these switches existed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, OneCycleLR, SequentialLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

WARMUP_START = 0.01  # the warm-up's first learning rate, as a share of the peak (torchvision's references)


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str, lr: float, epochs: int, steps_per_epoch: int,
                   warmup_epochs: float = 0.0) -> LRScheduler:
    """`onecycle`: OneCycleLR, warming up over the first 15 % of the steps, then cosine annealing.
    `cosine`: a linear warm-up over `warmup_epochs`, then cosine decay to 0 at the last step.

    A run shorter than twice the warm-up (e.g. the one-epoch fine-tunes between pruning steps) warms up
    over its first half, so that every run ends with its learning rate decayed.
    """
    total = epochs * steps_per_epoch
    if kind == "onecycle":
        return OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=0.15)
    warmup = min(round(warmup_epochs * steps_per_epoch), total // 2)
    decay = CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=0.0)
    if warmup == 0:
        return decay
    rise = LinearLR(optimizer, start_factor=WARMUP_START, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [rise, decay], milestones=[warmup])


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights and buffers (batch-norm statistics included);
    None for `decay` 0 (off). `update_parameters(model)` after each optimizer step moves it."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=warmed_up_ema(decay), use_buffers=True)


def warmed_up_ema(decay: float):
    """The EMA update with TensorFlow's warm-up (`ExponentialMovingAverage(num_updates=…)`): the n-th update
    uses min(decay, (1 + n) / (10 + n)).

    Without it the first weights, random or just pruned, fade as decay^n: after the 37 steps of one
    PneumoniaMNIST epoch a 0.99 average would still be 69 % the weights the run started from.
    """
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        get_ema_multi_avg_fn(min(decay, (1.0 + n) / (10.0 + n)))(averaged, current, n_averaged)
    return update
