"""Grad-CAM heat maps: where in an image each model looked for the class it predicted.

Target layer rule, the same for every torchvision CNN: the last `Conv2d` *executed* in a forward pass whose
output is still a spatial map (more than 1×1). Execution order, not the order modules were registered, is
what reaches the classifier last: `layer4[-1].conv2` in ResNet-18/34 (`conv3` in ResNet-50), the final 1×1
expansion convolution in MobileNetV2/V3, pruned or not. A 1×1 map would give a heat map with no shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from lib.processed import normalize
from lib.runtimes import predict
from lib.task import Task, for_meta

CELL_INCHES, DPI = 2.0, 100  # one image of the grid: 200 × 200 px


@dataclass(frozen=True)
class Explanation:
    """One model's Grad-CAM of a batch: heat maps (N, H, W) in [0, 1] for its own predicted classes."""
    heatmaps: np.ndarray
    predicted: np.ndarray
    probability: np.ndarray


def target_layer(model: nn.Module, example: torch.Tensor) -> nn.Conv2d:
    """The last convolution run on `example` (one input batch) whose output has a spatial map."""
    ran: list[tuple[nn.Conv2d, torch.Size]] = []
    hooks = [m.register_forward_hook(lambda module, _, out: ran.append((module, out.shape)))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    spatial = [module for module, shape in ran if shape[-2] * shape[-1] > 1]
    if not spatial:
        raise ValueError(f"{type(model).__name__} has no convolution with a spatial output on a "
                         f"{tuple(example.shape[-2:])} input; Grad-CAM needs one")
    return spatial[-1]


def stratified_sample(task: Task, labels: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Indices of `samples` images drawn at random (seeded), shared as evenly over the task's groups (its
    classes; for multi-label each image's first present label) as they allow.

    Groups take turns, so a rare class is shown as often as a common one; the result is grouped.
    """
    groups = task.sample_groups(labels)
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(groups == c)) for c in np.unique(groups)]
    turns = [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]
    chosen = np.asarray(turns[:samples])
    return chosen[np.argsort(groups[chosen], kind="stable")]


def gradcam(model: nn.Module, images: np.ndarray, meta: dict, device: torch.device) -> Explanation:
    """Grad-CAM of uint8 NHWC `images` at the model's `target_layer`, for the output the task says each
    image's map explains (the class it predicts; the label it scores highest)."""
    model = model.to(device).eval()
    probs = predict(model, images, meta, device=device)
    predicted = for_meta(meta).gradcam_targets(probs)
    batch = torch.from_numpy(normalize(images, meta).transpose(0, 3, 1, 2).copy()).to(device)
    with GradCAM(model=model, target_layers=[target_layer(model, batch[:1])]) as cam:
        heatmaps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in predicted])
    return Explanation(heatmaps, predicted, probs[np.arange(len(probs)), predicted])


def plot_grid(images: np.ndarray, labels: np.ndarray, explanations: dict[str, Explanation],
              task: Task, path: str | Path) -> None:
    """One row per image: the input, then each model's heat map over it, titled with its prediction."""
    rows, cols = len(images), 1 + len(explanations)
    fig = Figure(figsize=(cols * CELL_INCHES, rows * CELL_INCHES), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    gray = images.shape[-1] == 1
    for r, (image, label) in enumerate(zip(images, labels)):
        shown = image[..., 0] if gray else image
        axes[r, 0].imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=255)
        axes[r, 0].set_title(f"true: {task.describe(label)}", fontsize=8)
        for ax, (name, exp) in zip(axes[r, 1:], explanations.items()):
            ax.imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=255)
            ax.imshow(exp.heatmaps[r], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            ax.set_title(f"{name}: {task.classes[exp.predicted[r]]} ({exp.probability[r]:.2f})", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.savefig(path, format="png")
