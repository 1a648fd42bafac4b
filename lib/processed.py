"""The processed-split store: what `prepare_data` writes and every later stage reads.

One `.npy` per split and array: `<dir>/{split}_images.npy` uint8 (N, H, W, C) and `<dir>/{split}_labels.npy`
for split in train, val, test, plus `meta.json` (class names, counts, normalisation statistics of the
training split, image size, channels, content hash). The labels are stored as the task parsed them (class
indices for a single-label task, a 0/1 matrix for a multi-label one), and meta.json records the task as the
task itself says (single-label data records nothing, so it keeps the meta.json, and the hash, it had before
tasks existed). Plain `.npy` files can be memory-mapped, so a data set larger than the machine's memory is
written a chunk at a time and read only as far as a stage touches it.

No torch here: the conversion and benchmark stages read the store and `normalize` without the training code.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from numpy.lib.format import open_memmap

from lib.errors import UserError
from lib.io import atomic_path, read_json, write_json

if TYPE_CHECKING:
    from lib.config import DatasetConfig
    from lib.sources import RawDataset, SourceSplit

SPLITS = ("train", "val", "test")
CHUNK_BYTES = 8 * 2**20  # images are read, resized, written and summarised this many bytes at a time


def chunks(n: int, row_bytes: int) -> Iterator[slice]:
    """Slices over `n` rows of `row_bytes` each, about CHUNK_BYTES per slice (at least one row)."""
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    return (slice(start, min(start + step, n)) for start in range(0, n, step))


def row_bytes(images: np.ndarray) -> int:
    return int(np.prod(images.shape[1:])) * images.itemsize


def write_processed(raw: RawDataset, cfg: DatasetConfig, out_dir: str | Path) -> dict:
    """Write the processed splits and meta.json into `out_dir`, atomically as a whole folder.

    Images go to disk a chunk at a time, and the statistics and hash are computed from the written files,
    so memory stays flat however large the data set.
    """
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        channels = 1
        for split in SPLITS:
            np.save(tmp / f"{split}_labels.npy", raw.splits[split].labels)
            channels = _write_images(raw.splits[split], tmp / f"{split}_images.npy", cfg.image_size, channels)
        for split in SPLITS:  # a colour image in a later split makes the earlier ones RGB too
            _widen(tmp / f"{split}_images.npy", channels)
        splits = {split: load_split(tmp, split) for split in SPLITS}
        mean, std = channel_statistics(splits["train"][0])
        meta = {
            "source": cfg.source,
            **({"name": raw.name} if raw.name is not None else {}),
            "classes": raw.classes,
            **raw.task.meta_entry(),
            "image_size": cfg.image_size,
            "channels": channels,
            "mean": mean,
            "std": std,
            "test_split": raw.test_split,
            "counts": {split: raw.task.class_counts(y) for split, (_, y) in splits.items()},
            "sha256": content_hash(splits),
            **({"skipped_files": raw.skipped_files} if raw.skipped_files is not None else {}),
        }
        write_json(tmp / "meta.json", meta)
    return meta


def _write_images(split: SourceSplit, path: Path, size: int, channels: int) -> int:
    """Fill `path` with the split's images chunk by chunk; return its channel count.

    The file starts `channels` wide and is widened to RGB at the first colour chunk, so a gray data set
    stays one channel without decoding its images twice.
    """
    images = open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(split), size, size, channels))
    rows = np.arange(len(split))
    for chunk in chunks(len(split), size * size * 3):
        batch = split.read(rows[chunk])
        if batch.shape[-1] > images.shape[-1]:
            images = _widen(path, batch.shape[-1])
        images[chunk] = batch  # a gray batch broadcasts into RGB rows
    images.flush()
    return images.shape[-1]


def _widen(path: Path, channels: int) -> np.memmap:
    """Rewrite a one-channel image file `channels` wide (gray copied into each), chunk by chunk; open it r+."""
    narrow = np.load(path, mmap_mode="r")
    if narrow.shape[-1] == channels:
        return np.load(path, mmap_mode="r+")
    wide_path = path.with_name(f"wide_{path.name}")
    wide = open_memmap(wide_path, mode="w+", dtype=np.uint8, shape=narrow.shape[:-1] + (channels,))
    for chunk in chunks(len(narrow), row_bytes(wide)):
        wide[chunk] = narrow[chunk]
    wide.flush()
    os.replace(wide_path, path)  # the open map follows the file to its new name
    return wide


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images scaled to [0, 1], rounded to 6 decimals.

    Computed from exact counts of the 256 pixel values, a chunk at a time: memory stays flat and the
    result is the same however the images are chunked (a running float sum would drift with the chunking).
    """
    channels = images.shape[-1]
    counts = np.zeros((channels, 256), dtype=np.int64)
    for chunk in chunks(len(images), row_bytes(images)):
        pixels = images[chunk].reshape(-1, channels)
        for c in range(channels):
            counts[c] += np.bincount(pixels[:, c], minlength=256)
    values = np.arange(256) / 255.0
    total = counts.sum(axis=1)
    mean = counts @ values / total
    var = (counts * (values - mean[:, None]) ** 2).sum(axis=1) / total
    return mean.round(6).tolist(), np.sqrt(var).round(6).tolist()


def content_hash(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """SHA-256 of every split's image bytes then label bytes, in SPLITS order, a chunk at a time."""
    digest = hashlib.sha256()
    for split in SPLITS:
        images, labels = splits[split]
        for chunk in chunks(len(images), row_bytes(images)):
            digest.update(np.ascontiguousarray(images[chunk]))
        digest.update(np.ascontiguousarray(labels))
    return digest.hexdigest()


def load_meta(processed_dir: str | Path) -> dict:
    path = Path(processed_dir) / "meta.json"
    if not path.exists():
        raise UserError(f"{path} not found: run the prepare_data stage first (dvc repro prepare_data)")
    return read_json(path)


def load_split(processed_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's images memory-mapped (read from disk only as far as they are touched) and its labels.

    Mode "c" (copy-on-write) gives a writable array, so `torch.from_numpy` wraps it without warning about
    a read-only one ("r" would), while a write stays private to this process and never reaches the file,
    which DVC may share with its cache by a link ("r+" would corrupt both).
    """
    paths = [Path(processed_dir) / f"{split}_{part}.npy" for part in ("images", "labels")]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path} not found: run the prepare_data stage (dvc repro prepare_data), "
                            "which writes <split>_images.npy and <split>_labels.npy for train, val and test")
    return np.load(paths[0], mmap_mode="c"), np.load(paths[1])


def normalize(images: np.ndarray, meta: dict) -> np.ndarray:
    """uint8 NHWC → float32 NHWC, scaled to [0, 1] and standardised with the training statistics."""
    mean = np.asarray(meta["mean"], dtype=np.float32)
    std = np.asarray(meta["std"], dtype=np.float32)
    return (images.astype(np.float32) / 255.0 - mean) / std
