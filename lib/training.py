"""The one training loop (teacher, student and the pruned fine-tune all use it), its losses, and seeding.

Shaped like torchvision's classification references: `train_one_epoch` and `evaluate` are plain functions,
parametrised by the criterion. A criterion is called as `criterion(logits, images, labels)` so the
distillation loss can ask the frozen teacher about the same batch.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lib.metrics import classification_metrics
from lib.runtimes import predict


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; `cuda` without a GPU is an error, not a silent fallback."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' was asked for but torch sees no CUDA GPU; "
                           "set device: auto or cpu in params.yaml")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    """'balanced': n_samples / (n_classes · count), as scikit-learn's `class_weight='balanced'`."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels)
    return torch.tensor(weights, dtype=torch.float32)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float, hard_loss: nn.Module) -> torch.Tensor:
    """α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·hard_loss(s, y)  (Hinton et al., 2015).

    T² keeps the soft term's gradients on the same scale as the hard term's whatever the temperature.
    """
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * temperature ** 2 * soft + (1.0 - alpha) * hard_loss(student_logits, labels)


class HardLabelLoss(nn.Module):
    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def forward(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, labels)


class DistillationLoss(nn.Module):
    """Knowledge distillation from a frozen teacher, which is kept in eval mode."""

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float,
                 weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha
        self.ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def train(self, mode: bool = True) -> "DistillationLoss":
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        return distillation_loss(logits, teacher_logits, labels, self.temperature, self.alpha, self.ce)


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loader: DataLoader,
                    device: torch.device) -> float:
    model.train()
    total, count = 0.0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        loss = criterion(model(images), images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(labels)
        count += len(labels)
    return total / count


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, meta: dict,
             device: torch.device) -> tuple[dict, np.ndarray]:
    """Metrics and probabilities of `model` on one split, through the same `predict` as every format."""
    probs = predict(model, images, meta, device=device)
    return classification_metrics(labels, probs, meta["classes"]), probs


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float
    weight_decay: float
    monitor: str


def fit(model: nn.Module, criterion: nn.Module, train_loader: DataLoader,
        val_split: tuple[np.ndarray, np.ndarray], meta: dict, schedule: Schedule,
        device: torch.device, live=None) -> tuple[nn.Module, dict]:
    """Train with AdamW and a one-cycle cosine schedule; return the best epoch's model on `monitor`.

    `live` is a dvclive `Live` that receives train loss and validation metrics every epoch.
    """
    model, criterion = model.to(device), criterion.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=schedule.lr, total_steps=schedule.epochs * len(train_loader), pct_start=0.15)
    best_score, best_state, best = -np.inf, None, {}
    for epoch in range(1, schedule.epochs + 1):
        loss = train_one_epoch(model, criterion, optimizer, scheduler, train_loader, device)
        val, _ = evaluate(model, *val_split, meta, device)
        score = val[schedule.monitor] if val[schedule.monitor] is not None else val["accuracy"]
        print(f"epoch {epoch}/{schedule.epochs}  loss {loss:.4f}  val accuracy {val['accuracy']:.4f}  "
              f"val {schedule.monitor} {score:.4f}", flush=True)
        if live is not None:
            live.log_metric("train/loss", loss)
            live.log_metric("train/lr", optimizer.param_groups[0]["lr"])
            for key in ("accuracy", "balanced_accuracy", "auc", "f1_macro"):
                if val[key] is not None:
                    live.log_metric(f"val/{key}", val[key])
            live.next_step()
        if score > best_score:
            best_score, best_state, best = score, copy.deepcopy(model.state_dict()), {"epoch": epoch}
    model.load_state_dict(best_state)
    return model.eval(), {"best_epoch": best["epoch"], f"best_val_{schedule.monitor}": float(best_score)}
