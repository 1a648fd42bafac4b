"""The one training loop (teacher, student and the pruned fine-tune all use it), its losses, and seeding.

Shaped like torchvision's classification references: `train_one_epoch` and `evaluate` are plain functions,
parametrised by the criterion. A criterion is called as `criterion(logits, images, labels)` so the
distillation loss can ask the frozen teacher about the same batch. Each criterion follows the data set's task:
softmax cross-entropy for one class per image, a binary cross-entropy per label (sigmoid) for multi-label.
"""

from __future__ import annotations

import copy
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from lib import distributed
from lib.data import MULTI_CLASS, MULTI_LABEL
from lib.errors import UserError
from lib.metrics import classification_metrics
from lib.runtimes import predict, torch_runner

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
EVAL_BATCH = 256  # measured on CPU: 1024 is no faster for 28 px images


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
        raise UserError("device: 'cuda' was asked for but torch sees no CUDA GPU; "
                        "set device: auto or cpu in params.yaml")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass(frozen=True)
class Compute:
    """Where and how a network computes: the device and the autocast precision (weights stay fp32).

    Tensors are kept in channels-last (NHWC) memory format, which oneDNN on CPU and cuDNN on GPUs run
    faster for convolutions than NCHW.
    """
    device: torch.device
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision == "fp16" and self.device.type != "cuda":
            raise UserError(f"precision: got 'fp16' on device {self.device.type!r}; fp16 with loss scaling "
                            "needs a CUDA GPU; use fp32 or bf16 on CPU")

    def autocast(self) -> torch.autocast:
        """Mixed precision for bf16/fp16; for fp32 autocast switched off, also inside an enclosing one."""
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES.get(self.precision),
                              enabled=self.precision != "fp32")

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Scales fp16 losses so small gradients do not underflow; a pass-through for fp32 and bf16."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def to_input(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, memory_format=torch.channels_last, non_blocking=True)


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    """'balanced': n_samples / (n_classes · count), as scikit-learn's `class_weight='balanced'`.

    For a multi-label matrix: negatives / positives per label, BCE's `pos_weight`, which weighs each
    label's positives as much as its negatives.
    """
    if mode == "none":
        return None
    if labels.ndim == 2:
        positives = labels.sum(axis=0, dtype=np.float64)
        return torch.tensor((len(labels) - positives) / positives, dtype=torch.float32)
    from sklearn.utils.class_weight import compute_class_weight
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels)
    return torch.tensor(weights, dtype=torch.float32)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float, hard_loss: nn.Module,
                      task: str = MULTI_CLASS) -> torch.Tensor:
    """α·T²·soft(s/T, t/T) + (1−α)·hard_loss(s, y)  (Hinton et al., 2015), soft as in `soft_target_loss`.

    T² keeps the soft term's gradients on the same scale as the hard term's whatever the temperature.
    """
    soft = soft_target_loss(student_logits / temperature, teacher_logits / temperature, task)
    return alpha * temperature ** 2 * soft + (1.0 - alpha) * hard_loss(student_logits, labels)


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, task: str) -> torch.Tensor:
    """KL(softmax(t) ‖ softmax(s)) per image; multi-label: BCE(sigmoid(s), sigmoid(t)) averaged over images
    and labels, the binary KL of each label plus the teacher's entropy (a constant: same gradients)."""
    if task == MULTI_LABEL:
        return F.binary_cross_entropy_with_logits(student_logits, torch.sigmoid(teacher_logits))
    return F.kl_div(F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits, dim=1),
                    reduction="batchmean", log_target=True)


class MultiLabelBCE(nn.Module):
    """BCE on each label's logit against a 0/1 label matrix; label smoothing ε moves targets to ε/2, 1 − ε/2."""

    def __init__(self, pos_weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        targets = labels.float() * (1.0 - self.label_smoothing) + self.label_smoothing / 2
        return self.bce(logits.float(), targets)


def hard_loss(task: str, weight: torch.Tensor | None, label_smoothing: float) -> nn.Module:
    """The loss on the true labels: cross-entropy, or per-label BCE (`weight` as pos_weight) for multi-label."""
    if task == MULTI_LABEL:
        return MultiLabelBCE(weight, label_smoothing)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


class HardLabelLoss(nn.Module):
    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                 task: str = MULTI_CLASS):
        super().__init__()
        self.hard = hard_loss(task, weight, label_smoothing)

    def forward(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.hard(logits, labels)


class DistillationLoss(nn.Module):
    """Knowledge distillation from a frozen teacher, which is kept in eval mode.

    The teacher runs once per batch, without autograd, at its own `teacher_precision` (the one it was
    trained at), whatever precision the student trains at.
    """

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float,
                 weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                 teacher_precision: str = "fp32", task: str = MULTI_CLASS):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha
        self.teacher_precision = teacher_precision
        self.task = task
        self.hard = hard_loss(task, weight, label_smoothing)

    def train(self, mode: bool = True) -> "DistillationLoss":
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        compute = Compute(images.device, self.teacher_precision)
        with torch.inference_mode(), compute.autocast():
            teacher_logits = self.teacher(images).float()
        # an inference-mode tensor cannot be saved for backward: clone it into a normal one
        return distillation_loss(logits, teacher_logits.clone(), labels, self.temperature, self.alpha, self.hard,
                                 self.task)


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loader: DataLoader,
                    compute: Compute, scaler: torch.amp.GradScaler) -> float:
    """One pass over `loader`; returns the mean training loss over all ranks."""
    model.train()
    total = torch.zeros(2, dtype=torch.float64)  # loss sum, sample count
    for images, labels in tqdm(loader, desc="train", leave=False, disable=_quiet()):
        images, labels = compute.to_input(images), labels.to(compute.device, non_blocking=True)
        with compute.autocast():
            loss = criterion(model(images), images, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += torch.tensor([loss.item() * len(labels), len(labels)], dtype=torch.float64)
    distributed.sum_(total)
    return float(total[0] / total[1])


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, meta: dict,
             device: torch.device, batch_size: int = EVAL_BATCH) -> tuple[dict, np.ndarray]:
    """Metrics and probabilities of `model` on one split, through the same `predict` as every format."""
    run = torch_runner(model, device)
    probs = np.concatenate([predict(run, images[i:i + batch_size], meta, batch_size=batch_size)
                            for i in tqdm(range(0, len(images), batch_size), desc="evaluate",
                                          leave=False, disable=_quiet())])
    return classification_metrics(labels, probs, meta["classes"]), probs


def _quiet() -> bool | None:
    """tqdm's `disable`: None hides bars when stderr is not a terminal (logs, CI); ranks > 0 never show."""
    return None if distributed.is_main() else True


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float
    weight_decay: float
    monitor: str


def fit(model: nn.Module, criterion: nn.Module, train_loader: DataLoader,
        val_split: tuple[np.ndarray, np.ndarray], meta: dict, schedule: Schedule,
        compute: Compute, live=None) -> tuple[nn.Module, dict]:
    """Train with AdamW and a one-cycle cosine schedule; return the best epoch's model on `monitor`.

    `live` is a dvclive `Live` that receives train loss and validation metrics every epoch.
    Under torch.distributed (see `lib.distributed`) the model trains as DistributedDataParallel; rank 0
    alone validates and picks the best epoch, and every rank keeps that epoch's weights.
    """
    model = model.to(compute.device, memory_format=torch.channels_last)
    criterion = criterion.to(compute.device, memory_format=torch.channels_last)
    net = DistributedDataParallel(model) if distributed.is_active() else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=schedule.lr, total_steps=schedule.epochs * len(train_loader), pct_start=0.15)
    scaler = compute.grad_scaler()
    best_score, best_state, best_epoch = -np.inf, None, 0
    train_seconds, epoch_seconds, images = 0.0, [], 0
    for epoch in tqdm(range(1, schedule.epochs + 1), desc="epochs", disable=_quiet()):
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        loss = train_one_epoch(net, criterion, optimizer, scheduler, train_loader, compute, scaler)
        train_seconds += time.perf_counter() - start
        images += len(train_loader.sampler) * distributed.world_size()
        improved = False
        if distributed.is_main():
            score = _validate(model, val_split, meta, schedule, compute, epoch, loss, optimizer, live)
            improved = score > best_score
            best_score = max(score, best_score)
        if distributed.broadcast_flag(improved):
            best_state, best_epoch = copy.deepcopy(model.state_dict()), epoch
        epoch_seconds.append(time.perf_counter() - start)
    model.load_state_dict(best_state)
    info = {"best_epoch": best_epoch, f"best_val_{schedule.monitor}": float(best_score),
            "precision": compute.precision, "images_per_s": round(images / train_seconds, 1),
            "epoch_seconds": round(float(np.mean(epoch_seconds)), 2)}
    return model.to(memory_format=torch.contiguous_format).eval(), info


def _validate(model: nn.Module, val_split: tuple[np.ndarray, np.ndarray], meta: dict, schedule: Schedule,
              compute: Compute, epoch: int, loss: float, optimizer: torch.optim.Optimizer, live) -> float:
    """Score the epoch on val (fp32), print the one-line summary, log it; return the monitored score."""
    val, _ = evaluate(model, *val_split, meta, compute.device)
    score = val[schedule.monitor] if val[schedule.monitor] is not None else val["accuracy"]
    with tqdm.external_write_mode(file=sys.stderr):  # lift the bars (stderr) while printing
        print(f"epoch {epoch}/{schedule.epochs}  loss {loss:.4f}  val accuracy {val['accuracy']:.4f}  "
              f"val {schedule.monitor} {score:.4f}", flush=True)
    if live is not None:
        live.log_metric("train/loss", loss)
        live.log_metric("train/lr", optimizer.param_groups[0]["lr"])
        for key in ("accuracy", "balanced_accuracy", "auc", "f1_macro"):
            if val[key] is not None:
                live.log_metric(f"val/{key}", val[key])
        live.next_step()
    return score
