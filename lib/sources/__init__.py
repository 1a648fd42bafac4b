"""Data set sources: each reads one kind of raw data into the same `RawDataset`, which `lib.processed` writes.

Adding a source: a module here with `load(cfg: DatasetConfig) -> RawDataset`, and one line in `SOURCES`.
A source decides which task its labels describe and parses them through that task; everything else about
labels (checks, the carved test split, counts) is asked of the task, here and in `lib.processed`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn.model_selection import train_test_split

from lib.config import DatasetConfig
from lib.errors import UserError
from lib.images import resize
from lib.task import Task

# dataset.source → the module whose `load(cfg)` reads it. Named, not imported: each module imports
# `SourceSplit` and `RawDataset` from this package, and a source's own libraries load only when it is used.
SOURCES: dict[str, str] = {
    "medmnist": "lib.sources.medmnist",
    "imagefolder": "lib.sources.imagefolder",
    "arrays": "lib.sources.arrays",
}

Reader = Callable[[np.ndarray], np.ndarray]


@dataclass
class SourceSplit:
    """One split as a source has it: labels in memory, images read on demand a chunk of rows at a time.

    `read(rows)` gives those rows as uint8 NHWC images at the target size, so preparing a data set never
    holds a whole split of decoded images.
    """
    labels: np.ndarray
    read: Reader

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> SourceSplit:
        return SourceSplit(self.labels[rows], lambda chunk: self.read(rows[chunk]))


@dataclass
class RawDataset:
    """Every split of a source, before writing, and the task its labels are for (built with the class names)."""
    splits: dict[str, SourceSplit]
    task: Task
    test_split: str = "provided by the source"  # where the test split came from, recorded in meta.json
    skipped_files: dict[str, int] | None = None  # imagefolder: non-image files left out, per split folder
    name: str | None = None  # medmnist: the data set's name, recorded in meta.json

    @property
    def classes(self) -> list[str]:
        return self.task.classes


def load_source(cfg: DatasetConfig, seed: int) -> RawDataset:
    """The configured source's splits, with a stratified test split carved from train when it has none."""
    raw: RawDataset = importlib.import_module(SOURCES[cfg.source]).load(cfg)
    raw.task.check_splits({split: source.labels for split, source in raw.splits.items()})
    if "test" not in raw.splits:
        raw.splits["train"], raw.splits["test"] = _carve(raw.splits["train"], raw.task, cfg.test_fraction, seed)
        raw.test_split = f"carved from train: {cfg.test_fraction:.0%} {raw.task.carve_rule}, seed {seed}"
    return raw


def _carve(train: SourceSplit, task: Task, fraction: float, seed: int) -> tuple[SourceSplit, SourceSplit]:
    """Stratified as the task says (by class; a multi-label split at random, its label sets being too many)."""
    try:
        train_rows, test_rows = train_test_split(np.arange(len(train)), test_size=fraction,
                                                 stratify=task.stratify(train.labels), random_state=seed)
    except ValueError as err:
        raise UserError(f"dataset.test_fraction: cannot carve a stratified {fraction:.0%} test split from "
                        f"the {len(train)} train images ({err}); add more images per class or give the "
                        "source its own test split") from err
    return train.subset(train_rows), train.subset(test_rows)


def array_reader(images: np.ndarray, size: int, scale: float | None = None) -> Reader:
    """Rows of an NHWC array (in memory or memory-mapped) → uint8 at `size`; `scale` rounds floats to 0–255."""
    def read(rows: np.ndarray) -> np.ndarray:
        chunk = images[rows]
        if scale is not None:
            chunk = np.rint(chunk * scale)
        return resize(chunk.astype(np.uint8, copy=False), size)
    return read
