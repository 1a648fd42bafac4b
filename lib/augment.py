"""Training augmentation applied to a whole batch at once.

torchvision's `RandomAffine` draws one transform per call, so per-image jitter means one call per image:
on 28 px images that per-sample Python overhead cost more than the network's forward pass. Here every
image still gets its own random rotation, translation and scale, but all of them are resampled in one
`affine_grid` + `grid_sample` call on the batch tensor.

The optional levers (docs/recipes.md#levers) come from torchvision: a per-image policy on the uint8 image
before normalisation (`train.policy`), and MixUp / CutMix on the normalised batch after the jitter, which
turn the class indices into soft targets (`train.mixup_alpha`, `train.cutmix_alpha`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate
from torchvision.transforms import v2

POLICIES = {"trivialaugment": v2.TrivialAugmentWide, "randaugment": v2.RandAugment}


class RandomAffineBatch:
    """Per-image random affine jitter for normalised NCHW batches (parameters as torchvision's `RandomAffine`).

    `fill` is the per-channel value of the uncovered border in the normalised space: pixel value 0
    standardised, so the border looks black as it would had the jitter run before normalisation.
    Random numbers come from torch's global generator, seeded by the caller (or per DataLoader worker).
    """

    def __init__(self, degrees: float, translate: float, scale: tuple[float, float], fill: list[float]):
        self.degrees, self.translate, self.scale = degrees, translate, scale
        self.fill = torch.tensor(fill, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        angle = (torch.rand(n) * 2 - 1) * math.radians(self.degrees)
        shift = (torch.rand(n, 2) * 2 - 1) * 2 * self.translate  # in affine_grid's [-1, 1] units
        scale = torch.empty(n).uniform_(*self.scale)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # output pixel p samples the input at R⁻¹(p − t)/s: the inverse of scale, rotate, then shift
        theta = torch.stack([torch.stack([cos, sin, -(cos * shift[:, 0] + sin * shift[:, 1])], 1),
                             torch.stack([-sin, cos, sin * shift[:, 0] - cos * shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        fill = self.fill.to(images.dtype)
        return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False) + fill


def image_policy(name: str) -> v2.Transform | None:
    """`train.policy`: torchvision's per-image augmentation policy for uint8 CHW images; None for 'none'.
    Geometric operations fill with 0, black, as the affine jitter's border."""
    return None if name == "none" else POLICIES[name]()


def batch_mixing(mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> v2.Transform | None:
    """MixUp and/or CutMix of (images, class indices) → (mixed images, soft targets (N, C) summing to 1);
    with both on, one of the two drawn per batch. None when both alphas are 0."""
    mixes = [mix(alpha=alpha, num_classes=num_classes)
             for mix, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if alpha > 0]
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


class BatchCollate:
    """A DataLoader `collate_fn`: stack the samples, jitter the image batch (`affine`), then mix it (`mix`)."""

    def __init__(self, affine: RandomAffineBatch | None, mix: v2.Transform | None = None):
        self.affine, self.mix = affine, mix

    def __call__(self, samples: list) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = default_collate(samples)
        if self.affine is not None:
            images = self.affine(images)
        if self.mix is not None:
            images, labels = self.mix(images, labels)
        return images, labels
