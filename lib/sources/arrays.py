"""The `arrays` source: `X_<split>.npy` images (memory-mapped) and `y_<split>.npy` labels; NHWC or NCHW,
uint8 or float.

Labels are class indices, one-hot rows, or a 0/1 matrix (N, L) of L labels per image; which task they are
is the task registry's call (`lib.task.for_labels`), over every split at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.config import DatasetConfig
from lib.errors import UserError
from lib.processed import SPLITS, chunks, row_bytes
from lib.sources import RawDataset, Reader, SourceSplit, array_reader
from lib.task import for_labels


def load(cfg: DatasetConfig) -> RawDataset:
    root = Path(cfg.root)
    found = _find(root)
    task_cls = for_labels([y for _, _, y in found.values()])
    splits = {}
    for split, (x_path, y_path, y) in found.items():
        x = np.load(x_path, mmap_mode="r", allow_pickle=False)
        y = task_cls.parse_labels(y, y_path)
        if len(x) != len(y):
            raise UserError(f"{x_path.name} has {len(x)} images but {y_path.name} has {len(y)} labels")
        splits[split] = SourceSplit(y, _images_reader(x, x_path, cfg.image_size))
    classes_file = root / "classes.txt"
    if classes_file.exists():
        classes = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
    else:
        classes = [str(i) for i in range(task_cls.count_outputs([s.labels for s in splits.values()]))]
    return RawDataset(splits, task_cls(classes))


def _find(root: Path) -> dict[str, tuple[Path, Path, np.ndarray]]:
    """Each split's images path, labels path and labels as stored; the test split may be left out."""
    found = {}
    for split in SPLITS:
        x_path, y_path = root / f"X_{split}.npy", root / f"y_{split}.npy"
        if not x_path.exists() and not y_path.exists() and split == "test":
            continue
        for p in (x_path, y_path):
            if not p.exists():
                raise UserError(f"dataset.root: {p} not found; the arrays source needs X_train.npy, "
                                "y_train.npy, X_val.npy, y_val.npy (X_test.npy/y_test.npy optional)")
        found[split] = (x_path, y_path, np.load(y_path, allow_pickle=False))
    return found


def _images_reader(x: np.ndarray, path: Path, size: int) -> Reader:
    """Check an images array's shape and values (a chunk at a time) and read it as uint8 NHWC."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise UserError(f"{path}: images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W); "
                        f"got {x.shape}")
    if x.shape[-1] not in (1, 3):
        if x.shape[1] not in (1, 3):
            raise UserError(f"{path}: shape {x.shape} has no channel axis of size 1 or 3 "
                            "(expected NHWC or NCHW with 1 or 3 channels)")
        x = x.transpose(0, 2, 3, 1)
    floating = np.issubdtype(x.dtype, np.floating)
    if not (floating or np.issubdtype(x.dtype, np.integer)):
        raise UserError(f"{path}: images must be uint8 (0–255) or float; got dtype {x.dtype}")
    lo, hi = _value_range(x)
    if floating:
        if not np.isfinite([lo, hi]).all() or lo < 0 or hi > 255:
            raise UserError(f"{path}: float images must be finite and in [0, 1] or [0, 255]")
        return array_reader(x, size, scale=255.0 if hi <= 1.0 else 1.0)
    if lo < 0 or hi > 255:
        raise UserError(f"{path}: images must be uint8 (0–255) or float; got {x.dtype} values {lo}..{hi}")
    return array_reader(x, size)


def _value_range(x: np.ndarray) -> tuple[float, float]:
    """Smallest and largest value, a chunk at a time (a NaN anywhere comes out as NaN)."""
    ranges = [(x[rows].min(), x[rows].max()) for rows in chunks(len(x), row_bytes(x))] or [(0, 0)]
    lows, highs = zip(*ranges)
    return float(np.min(lows)), float(np.max(highs))
