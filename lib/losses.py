"""The training criteria: hard labels alone, or knowledge distillation from a frozen teacher.

A criterion is called as `criterion(logits, images, labels)` so the distillation loss can ask the teacher
about the same batch. The task (`lib.task`) supplies the hard loss and the soft term: softmax cross-entropy
and KL divergence for one class per image, a binary cross-entropy per label for multi-label.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lib.compute import Compute
from lib.context import Context
from lib.ensemble import Ensemble
from lib.models import load_checkpoint
from lib.task import Task


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float, hard_loss: nn.Module, task: Task) -> torch.Tensor:
    """α·T²·soft(s/T, t/T) + (1−α)·hard_loss(s, y)  (Hinton et al., 2015), soft as the task defines it, at the
    temperature the task distils at (`Task.distillation_temperature`: multi-label data at 1).

    T² keeps the soft term's gradients on the same scale as the hard term's whatever the temperature.
    """
    temperature = task.distillation_temperature(temperature)
    soft = task.soft_loss(student_logits / temperature, teacher_logits / temperature)
    return alpha * temperature ** 2 * soft + (1.0 - alpha) * hard_loss(student_logits, labels)


class HardLabelLoss(nn.Module):
    def __init__(self, task: Task, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.hard = task.hard_loss(weight, label_smoothing)

    def forward(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.hard(logits, labels)


class DistillationLoss(nn.Module):
    """Knowledge distillation from a frozen teacher, which is kept in eval mode.

    The teacher runs once per batch, without autograd, at its own `teacher_precision` (the one it was
    trained at), whatever precision the student trains at.
    """

    def __init__(self, teacher: nn.Module, task: Task, temperature: float, alpha: float,
                 weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                 teacher_precision: str = "fp32"):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.task = task
        self.temperature, self.alpha = temperature, alpha
        self.teacher_precision = teacher_precision
        self.hard = task.hard_loss(weight, label_smoothing)

    def train(self, mode: bool = True) -> "DistillationLoss":
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        compute = Compute(images.device, self.teacher_precision)
        with torch.inference_mode(), compute.autocast():
            teacher_logits = self.teacher(images).float()
        # an inference-mode tensor cannot be saved for backward: clone it into a normal one
        return kd_loss(logits, teacher_logits.clone(), labels, self.temperature, self.alpha, self.hard, self.task)


def hard_label_criterion(ctx: Context) -> HardLabelLoss:
    cfg = ctx.params.train
    return HardLabelLoss(ctx.task, ctx.task.class_weights(ctx.splits["train"][1], cfg.class_weights),
                         cfg.label_smoothing)


def distillation_criterion(ctx: Context, teacher: nn.Module) -> DistillationLoss:
    """An ensemble teacher's soft targets are its members' probabilities at the temperature, averaged."""
    if isinstance(teacher, Ensemble):
        teacher = teacher.tempered(ctx.params.distill.temperature)
    cfg = ctx.params.train
    return DistillationLoss(teacher, ctx.task, ctx.params.distill.temperature, ctx.params.distill.alpha,
                            ctx.task.class_weights(ctx.splits["train"][1], cfg.class_weights),
                            cfg.label_smoothing, teacher_precision=cfg.precision)


def distilling(ctx: Context) -> bool:
    """`distill.alpha: 0` switches distillation off: the student learns from the labels alone."""
    return ctx.params.distill.alpha > 0


def student_criterion(ctx: Context, teacher_path: str | Path) -> nn.Module:
    """The loss of the student and of the pruned fine-tune: distillation from the teacher checkpoint, or with
    distillation off the hard labels alone, without loading (or ever running) the teacher."""
    if not distilling(ctx):
        return hard_label_criterion(ctx)
    teacher, _ = load_checkpoint(teacher_path, ctx.device)
    return distillation_criterion(ctx, teacher)
