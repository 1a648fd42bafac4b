"""What the stage scripts share: loading params and data once, training with logging, scoring, checks."""

from __future__ import annotations

import dataclasses
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lib import distributed
from lib.config import Params, load_params
from lib.data import SPLITS, is_multi_label, load_meta, load_split, make_loader, task_of
from lib.errors import UserError
from lib.metrics import accuracy_from_probs, agreement, auc_score, classification_metrics, f1_thresholds
from lib.models import Ensemble, ModelSpec, build_from_spec, load_checkpoint
from lib.runtimes import predict
from lib.training import (Compute, DistillationLoss, HardLabelLoss, Schedule, class_weights, fit,
                          resolve_device, seed_everything)


@dataclass
class Context:
    params: Params
    meta: dict
    device: torch.device
    splits: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    @property
    def task(self) -> str:
        return task_of(self.meta)

    def spec(self, arch: str, width: float = 1.0) -> ModelSpec:
        return ModelSpec(arch, self.num_classes, self.meta["channels"], self.meta["image_size"], width)

    def build(self, arch: str, width: float = 1.0) -> nn.Module:
        return build_from_spec(self.spec(arch, width))

    def example_input(self) -> torch.Tensor:
        size = self.meta["image_size"]
        return torch.zeros(1, self.meta["channels"], size, size)


def setup(processed_dir: str | Path) -> Context:
    """Validate params (the precisions against the device too), fix the seeds, load the processed splits."""
    params = load_params()
    seed_everything(params.seed)
    device = resolve_device(params.device)
    for precision in (params.train.precision, params.distill.precision):
        Compute(device, precision)
    meta = load_meta(processed_dir)
    splits = {split: load_split(processed_dir, split) for split in SPLITS}
    return Context(params, meta, device, splits)


def hard_label_loss(ctx: Context) -> HardLabelLoss:
    cfg = ctx.params.train
    return HardLabelLoss(class_weights(ctx.splits["train"][1], ctx.num_classes, cfg.class_weights),
                         cfg.label_smoothing, ctx.task)


def distillation_loss(ctx: Context, teacher: nn.Module) -> DistillationLoss:
    """An ensemble teacher's soft targets are its members' probabilities at the temperature, averaged."""
    if isinstance(teacher, Ensemble):
        teacher = teacher.tempered(ctx.params.distill.temperature)
    cfg = ctx.params.train
    return DistillationLoss(teacher, ctx.params.distill.temperature, ctx.params.distill.alpha,
                            class_weights(ctx.splits["train"][1], ctx.num_classes, cfg.class_weights),
                            cfg.label_smoothing, teacher_precision=cfg.precision, task=ctx.task)


def distilling(ctx: Context) -> bool:
    """`distill.alpha: 0` switches distillation off: the student learns from the labels alone."""
    return ctx.params.distill.alpha > 0


def student_criterion(ctx: Context, teacher_path: str | Path) -> nn.Module:
    """The loss of the student and of the pruned fine-tune: distillation from the teacher checkpoint, or with
    distillation off the hard labels alone, without loading (or ever running) the teacher."""
    if not distilling(ctx):
        return hard_label_loss(ctx)
    teacher, _ = load_checkpoint(teacher_path, ctx.device)
    return distillation_loss(ctx, teacher)


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
                         rank=distributed.rank(), world_size=distributed.world_size())
    schedule = Schedule(epochs, lr, cfg.weight_decay, cfg.monitor)
    compute = Compute(ctx.device, precision)
    if not distributed.is_main():
        return fit(model, criterion, loader, ctx.splits["val"], ctx.meta, schedule, compute)
    with Live(str(live_dir), save_dvc_exp=False, dvcyaml=None) as live:
        return fit(model, criterion, loader, ctx.splits["val"], ctx.meta, schedule, compute, live)


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


def score(model: nn.Module, ctx: Context, splits: tuple[str, ...] = ("val", "test")) -> dict:
    """Classification metrics of a torch model on the named splits.

    Multi-label: per-label thresholds chosen on val (when scored first) are applied to the later splits.
    """
    out, thresholds = {}, None
    for split in splits:
        images, labels = ctx.splits[split]
        probs = predict(model, images, ctx.meta, device=ctx.device)
        out[split] = classification_metrics(labels, probs, ctx.meta["classes"], thresholds)
        if split == "val" and is_multi_label(ctx.meta):
            thresholds = f1_thresholds(labels, probs)
    return out


def run_info(ctx: Context) -> dict:
    """Seed, device, and the peak resident memory of this process or of its training workers."""
    peak_kb = max(resource.getrusage(who).ru_maxrss
                  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"seed": ctx.params.seed, "device": ctx.device.type, "peak_rss_mb": round(peak_kb / 1024, 1)}


def check_parity(reference: np.ndarray, probs: np.ndarray, what: str,
                 min_agreement: float, max_prob_diff: float, multi_label: bool = False) -> dict:
    """Compare two artifacts' test probabilities; raise (so the stage writes nothing) when they drift.

    `min_agreement` bounds the top-1 agreement, or for multi-label the agreement of the label decisions.
    """
    result = agreement(reference, probs, multi_label)
    kind, share = ("label", result["label_agreement"]) if multi_label else ("top-1", result["top1_agreement"])
    if share < min_agreement or result["max_abs_prob_diff"] > max_prob_diff:
        raise RuntimeError(
            f"{what} parity check failed: {kind} agreement {share:.4%} "
            f"(need ≥ {min_agreement:.2%}), max |Δprob| {result['max_abs_prob_diff']:.2e} "
            f"(need ≤ {max_prob_diff:.0e}); the converted model does not compute what its source does")
    return result


def calibration_images(ctx: Context) -> np.ndarray:
    """`quantize.calibration_samples` training images (seeded draw), float32 NHWC in [0, 1]: what the INT8
    converters calibrate activation ranges on."""
    train_images, _ = ctx.splits["train"]
    rng = np.random.default_rng(ctx.params.seed)
    size = min(ctx.params.quantize.calibration_samples, len(train_images))
    picked = rng.choice(len(train_images), size=size, replace=False)
    return train_images[np.sort(picked)].astype(np.float32) / 255.0


def split_figures(labels: np.ndarray, probs: np.ndarray) -> dict:
    """The two figures the quantization stages compare artifacts by."""
    return {"accuracy": accuracy_from_probs(labels, probs), "auc": auc_score(labels, probs)}
