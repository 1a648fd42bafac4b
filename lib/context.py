"""What every stage shares: params, the processed splits and their task, the device, scoring and the
parity gate of a conversion.

No training code is imported here, so a stage that only converts or measures models depends on what it
uses and is not rerun by DVC when the training loop or the augmentation changes.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from lib import task as tasks
from lib.compute import Compute, resolve_device, seed_everything
from lib.config import Params, load_params
from lib.io import atomic_path
from lib.models import ModelSpec, build_from_spec, check_params
from lib.processed import SPLITS, load_meta, load_split
from lib.runtimes import predict


@dataclass
class Context:
    params: Params
    meta: dict
    device: torch.device
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    task: tasks.Task

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    def spec(self, arch: str, width: float = 1.0, last_stride: int = 2) -> ModelSpec:
        return ModelSpec(arch, self.num_classes, self.meta["channels"], self.meta["image_size"], width, last_stride)

    def build(self, arch: str, width: float = 1.0) -> nn.Module:
        return build_from_spec(self.spec(arch, width))

    def example_input(self) -> torch.Tensor:
        size = self.meta["image_size"]
        return torch.zeros(1, self.meta["channels"], size, size)


def setup(processed_dir: str | Path) -> Context:
    """Validate params (model names, the precisions against the device, the decision rule against the task),
    fix the seeds, load the splits."""
    params = load_params()
    check_params(params)
    seed_everything(params.seed)
    device = resolve_device(params.device)
    for precision in (params.train.precision, params.distill.precision):
        Compute(device, precision)
    meta = load_meta(processed_dir)
    splits = {split: load_split(processed_dir, split) for split in SPLITS}
    task = tasks.for_meta(meta)
    task.check_decision(params.benchmark.decision, splits["val"][1])
    if params.train.mixup_alpha or params.train.cutmix_alpha:
        task.check_batch_mixing()
    return Context(params, meta, device, splits, task)


def score(model: nn.Module, ctx: Context, splits: tuple[str, ...] = ("val", "test")) -> dict:
    """Every figure of a torch model on the named splits; decision thresholds the task chooses on val (when
    it is scored first) are applied to the later splits."""
    out, thresholds = {}, None
    for split in splits:
        images, labels = ctx.splits[split]
        probs = predict(model, images, ctx.meta, device=ctx.device)
        out[split] = ctx.task.metrics(labels, probs, thresholds)
        if split == "val":
            thresholds = ctx.task.fit_thresholds(labels, probs)
    return out


def run_info(ctx: Context) -> dict:
    """Seed, device, and the peak resident memory of this process or of its training workers."""
    peak_kb = max(resource.getrusage(who).ru_maxrss
                  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"seed": ctx.params.seed, "device": ctx.device.type, "peak_rss_mb": round(peak_kb / 1024, 1)}


def check_parity(task: tasks.Task, reference: np.ndarray, probs: np.ndarray, what: str,
                 min_agreement: float, max_prob_diff: float) -> dict:
    """Compare two artifacts' test probabilities; raise (so the stage writes nothing) when they drift.

    `min_agreement` bounds the task's agreement (top-1, or the label decisions for multi-label).
    """
    result = task.agreement(reference, probs)
    share = result[task.agreement_key]
    if share < min_agreement or result["max_abs_prob_diff"] > max_prob_diff:
        raise RuntimeError(
            f"{what} parity check failed: {task.agreement_kind} agreement {share:.4%} "
            f"(need ≥ {min_agreement:.2%}), max |Δprob| {result['max_abs_prob_diff']:.2e} "
            f"(need ≤ {max_prob_diff:.0e}); the converted model does not compute what its source does")
    return result


def convert_checked(ctx: Context, convert: Callable[[Path], None], path: str | Path, reference: np.ndarray,
                    what: str, min_agreement: float, max_prob_diff: float) -> dict:
    """Write `path` with `convert(tmp)` only if the result reproduces the `reference` test probabilities.

    The file appears at `path` atomically, after its parity check passed; otherwise nothing is written.
    """
    images, _ = ctx.splits["test"]
    with atomic_path(path) as tmp:
        convert(tmp)
        parity = check_parity(ctx.task, reference, predict(tmp, images, ctx.meta), what, min_agreement,
                              max_prob_diff)
        size = tmp.stat().st_size
    return {"size_bytes": size, "parity": parity}


def calibration_images(ctx: Context) -> np.ndarray:
    """`quantize.calibration_samples` training images (seeded draw), float32 NHWC in [0, 1]: what the INT8
    converters calibrate activation ranges on."""
    train_images, _ = ctx.splits["train"]
    rng = np.random.default_rng(ctx.params.seed)
    size = min(ctx.params.quantize.calibration_samples, len(train_images))
    picked = rng.choice(len(train_images), size=size, replace=False)
    return train_images[np.sort(picked)].astype(np.float32) / 255.0


def split_figures(task: tasks.Task, labels: np.ndarray, probs: np.ndarray) -> dict:
    """The two figures the quantization stages compare artifacts by."""
    return {"accuracy": task.accuracy(labels, probs), "auc": task.auc(labels, probs)}
