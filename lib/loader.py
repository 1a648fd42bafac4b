"""The torch data pipeline for training: processed uint8 images → normalised, optionally augmented batches."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from lib.augment import BatchCollate, RandomAffineBatch, batch_mixing, image_policy


class ImageDataset(Dataset):
    """uint8 NHWC arrays → normalised CHW float tensors (augmentation is applied per batch, by the loader,
    but for an optional per-image `policy`, which runs on the uint8 image before normalisation)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, meta: dict, policy: v2.Transform | None = None):
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)  # a view: no copy, memory-mapped stays so
        self.labels = torch.from_numpy(labels)
        steps = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(meta["mean"], meta["std"])]
        self.transform = v2.Compose(steps if policy is None else [policy, *steps])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


def make_loader(images: np.ndarray, labels: np.ndarray, meta: dict, batch_size: int, *,
                shuffle: bool = False, augment: bool = False, seed: int = 0,
                device: torch.device | None = None, workers: int = 0,
                rank: int = 0, world_size: int = 1, policy: str = "none",
                mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> DataLoader:
    """Batches of normalised NCHW images; augmentation is per image but computed on the batch.

    The levers `policy`, `mixup_alpha` and `cutmix_alpha` (`lib.augment`) are off by default; with mixing
    on, the labels come as soft targets (N, classes).

    `workers` 0 loads in the training process, the fastest on CPU for small images; for a CUDA
    `device` batches also go into pinned memory so the copy to the GPU can overlap compute.
    With `world_size` > 1 each rank reads its own shard (DistributedSampler, shuffled with `seed`).
    """
    dataset = ImageDataset(images, labels, meta, image_policy(policy))
    affine = None
    if augment:
        # Small geometric jitter suits medical images, where colour and flips can change meaning.
        fill = [-m / s for m, s in zip(meta["mean"], meta["std"])]
        affine = RandomAffineBatch(degrees=10, translate=0.08, scale=(0.9, 1.1), fill=fill)
    mix = batch_mixing(mixup_alpha, cutmix_alpha, len(meta["classes"])) if mixup_alpha or cutmix_alpha else None
    collate = None if affine is None and mix is None else BatchCollate(affine, mix)
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    cuda = device is not None and device.type == "cuda"
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      generator=torch.Generator().manual_seed(seed), collate_fn=collate,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=cuda)
