"""Training augmentation applied to a whole batch at once.

torchvision's `RandomAffine` draws one transform per call, so per-image jitter means one call per image:
on 28 px images that per-sample Python overhead cost more than the network's forward pass. Here every
image still gets its own random rotation, translation and scale, but all of them are resampled in one
`affine_grid` + `grid_sample` call on the batch tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate


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

    def collate(self, samples: list) -> tuple[torch.Tensor, torch.Tensor]:
        """A DataLoader `collate_fn`: stack the samples, then jitter the image batch."""
        images, labels = default_collate(samples)
        return self(images), labels
