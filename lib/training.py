"""The one training loop: teacher, student, the pruned fine-tune and QAT all use it, on one process or
data-parallel.

Shaped like torchvision's classification references: `train_one_epoch` and `evaluate` are plain functions,
parametrised by the criterion (`lib.losses`), called as `criterion(logits, images, labels)`.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from lib import distributed
from lib.compute import Compute, seed_everything
from lib.context import Context
from lib.errors import UserError
from lib.loader import make_loader
from lib.runtimes import predict, torch_runner
from lib.schedules import make_scheduler, weight_average
from lib.task import for_meta

EVAL_BATCH = 256  # measured on CPU: 1024 is no faster for 28 px images


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loader: DataLoader,
                    compute: Compute, scaler: torch.amp.GradScaler,
                    ema: torch.optim.swa_utils.AveragedModel | None = None) -> float:
    """One pass over `loader`; returns the mean training loss over all ranks. `ema`, when given, follows
    the weights after every optimizer step."""
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
        if ema is not None:
            ema.update_parameters(model.module if isinstance(model, DistributedDataParallel) else model)
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
    return for_meta(meta).metrics(labels, probs), probs


def _quiet() -> bool | None:
    """tqdm's `disable`: None hides bars when stderr is not a terminal (logs, CI); ranks > 0 never show."""
    return None if distributed.is_main() else True


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float
    weight_decay: float
    monitor: str
    lr_schedule: str = "onecycle"  # `train.schedule`, with `warmup_epochs` (lib.schedules)
    warmup_epochs: float = 0.0
    ema_decay: float = 0.0  # > 0: the weights' moving average is validated, kept and returned instead of them


def fit(model: nn.Module, criterion: nn.Module, train_loader: DataLoader,
        val_split: tuple[np.ndarray, np.ndarray], meta: dict, schedule: Schedule,
        compute: Compute, live=None, bn_loader: DataLoader | None = None) -> tuple[nn.Module, dict]:
    """Train with AdamW and a one-cycle cosine schedule (or `lr_schedule`); return the best epoch's model on
    `monitor` (with `ema_decay`, the best epoch's moving average of the weights).

    `live` is a dvclive `Live` that receives train loss and validation metrics every epoch. With `bn_loader`
    (clean training images) the batch-norm statistics are recomputed before each validation
    (`recalibrate_batch_norm`). Under torch.distributed (see `lib.distributed`) the model trains as
    DistributedDataParallel; rank 0 alone validates and picks the best epoch, and every rank keeps that epoch's
    weights.
    """
    model = model.to(compute.device, memory_format=torch.channels_last)
    criterion = criterion.to(compute.device, memory_format=torch.channels_last)
    ema = weight_average(model, schedule.ema_decay)
    kept = model if ema is None else ema.module  # the weights validated, selected and returned
    net = DistributedDataParallel(model) if distributed.is_active() else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    scheduler = make_scheduler(optimizer, schedule.lr_schedule, schedule.lr, schedule.epochs, len(train_loader),
                               schedule.warmup_epochs)
    scaler = compute.grad_scaler()
    best_score, best_state, best_epoch = -np.inf, None, 0
    train_seconds, epoch_seconds, images = 0.0, [], 0
    for epoch in tqdm(range(1, schedule.epochs + 1), desc="epochs", disable=_quiet()):
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        loss = train_one_epoch(net, criterion, optimizer, scheduler, train_loader, compute, scaler, ema)
        train_seconds += time.perf_counter() - start
        images += len(train_loader.sampler) * distributed.world_size()
        if bn_loader is not None:  # on every rank: their weights and buffers stay identical
            recalibrate_batch_norm(kept, bn_loader, compute.device)
        improved = False
        if distributed.is_main():
            score = _validate(kept, val_split, meta, schedule, compute, epoch, loss, optimizer, live)
            improved = score > best_score
            best_score = max(score, best_score)
        if distributed.broadcast_flag(improved):
            best_state, best_epoch = copy.deepcopy(kept.state_dict()), epoch
        epoch_seconds.append(time.perf_counter() - start)
    model.load_state_dict(best_state)
    info = {"best_epoch": best_epoch, f"best_val_{schedule.monitor}": float(best_score),
            "precision": compute.precision, "images_per_s": round(images / train_seconds, 1),
            "epoch_seconds": round(float(np.mean(epoch_seconds)), 2)}
    return model.to(memory_format=torch.contiguous_format).eval(), info


def recalibrate_batch_norm(model: nn.Module, loader: DataLoader, device: torch.device) -> None:
    """Replace the batch-norm running statistics by the exact ones of the current weights on `loader`.

    The running averages (momentum 0.1) mix batches seen under earlier weights, and augmented ones. While the
    weights still move fast, eval-mode outputs are then shifted against training: PneumoniaMNIST's teacher
    ranked val well after its first epoch (AUC 0.97) but called half of it wrong (accuracy 0.52); the same
    weights with recomputed statistics scored 0.84. This is "precise BN" (Wu & Johnson, 2021). The training
    forward passes use batch statistics, so the weights' trajectory does not change; only what eval sees does.
    """
    torch.optim.swa_utils.update_bn((images for images, _ in loader), model, device)


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


def train(model: nn.Module, criterion: nn.Module, ctx: Context, epochs: int, lr: float,
          live_dir: str | Path, precision: str) -> tuple[nn.Module, dict]:
    """Train on the train split, keep the best epoch on val, log curves with dvclive into `live_dir`.

    With `train.nproc` > 1 the training runs data-parallel on that many processes; this process then
    receives rank 0's best weights and carries on alone (scoring, writing) as with one process.
    """
    start = time.perf_counter()
    nproc = ctx.params.train.nproc
    if nproc == 1:
        model, info = _train(model, criterion, ctx, epochs, lr, live_dir, precision)
    else:
        if ctx.device.type == "cuda" and nproc > torch.cuda.device_count():
            raise UserError(f"train.nproc: got {nproc}, but torch sees {torch.cuda.device_count()} CUDA GPU(s); "
                            "use at most one process per GPU")
        results = distributed.launch(train_worker, nproc, model.cpu(), criterion.cpu(), ctx, epochs, lr,
                                     str(live_dir), precision)
        if len({fingerprint for fingerprint, _, _ in results.values()}) > 1:
            raise RuntimeError(f"data-parallel training went out of sync: the {nproc} ranks ended with "
                               "different weights")
        _, state, info = results[0]
        model.load_state_dict(state)
        model = model.to(ctx.device).eval()
    info["train_seconds"] = round(time.perf_counter() - start, 1)
    return model, info


def _train(model: nn.Module, criterion: nn.Module, ctx: Context, epochs: int, lr: float,
           live_dir: str | Path, precision: str) -> tuple[nn.Module, dict]:
    from dvclive import Live

    cfg = ctx.params.train
    loader = make_loader(*ctx.splits["train"], ctx.meta, cfg.batch_size, shuffle=True,
                         augment=cfg.augment, seed=ctx.params.seed, device=ctx.device, workers=cfg.workers,
                         rank=distributed.rank(), world_size=distributed.world_size(), policy=cfg.policy,
                         mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha)
    schedule = Schedule(epochs, lr, cfg.weight_decay, cfg.monitor, cfg.schedule, cfg.warmup_epochs, cfg.ema_decay)
    compute = Compute(ctx.device, precision)
    bn_loader = batch_norm_loader(ctx, cfg.bn_recalibration)
    if not distributed.is_main():
        return fit(model, criterion, loader, ctx.splits["val"], ctx.meta, schedule, compute, bn_loader=bn_loader)
    with Live(str(live_dir), save_dvc_exp=False, dvcyaml=None) as live:
        return fit(model, criterion, loader, ctx.splits["val"], ctx.meta, schedule, compute, live, bn_loader)


def batch_norm_loader(ctx: Context, count: int) -> DataLoader | None:
    """`count` training images (all if fewer; a subset drawn with the run's seed, in stored order), not
    augmented: what `recalibrate_batch_norm` measures the statistics on. None for `count` 0 (off)."""
    if count == 0:
        return None
    images, labels = ctx.splits["train"]
    if count < len(labels):
        keep = np.sort(np.random.default_rng(ctx.params.seed).choice(len(labels), count, replace=False))
        images, labels = images[keep], labels[keep]
    return make_loader(images, labels, ctx.meta, EVAL_BATCH)


def train_worker(model: nn.Module, criterion: nn.Module, ctx: Context, epochs: int, lr: float,
                live_dir: str, precision: str) -> tuple[str, dict | None, dict | None]:
    """One data-parallel worker: every rank returns its weights' fingerprint, rank 0 also the weights
    (on CPU) and the training info."""
    device = distributed.init(ctx.device)
    try:
        seed_everything(ctx.params.seed + distributed.rank())  # own augmentation and dropout per rank
        ctx = dataclasses.replace(ctx, device=device)
        model, info = _train(model, criterion, ctx, epochs, lr, live_dir, precision)
        state = model.cpu().state_dict()
        if distributed.is_main():
            return distributed.fingerprint(state), state, info
        return distributed.fingerprint(state), None, None
    finally:
        distributed.close()
