"""Data set sources → one processed format, and the torch data pipeline every stage shares.

Processed format (what `prepare_data` writes and every later stage reads), one `.npy` per split and array:
`<dir>/{split}_images.npy` uint8 (N, H, W, C) and `<dir>/{split}_labels.npy` for split in train, val, test,
plus `meta.json` (class names, counts, normalisation statistics of the training split, image size, channels,
content hash). Labels are int64 class indices (N,) for a single-label task, and a uint8 0/1 matrix (N, L)
for a multi-label one, whose meta.json says `"task": "multi-label"` (no `task` means multi-class: binary is
two classes, and single-label data keeps the meta.json, and so the hash, it had before tasks existed).
Plain `.npy` files can be memory-mapped, so a data set larger than the machine's memory is written a chunk
at a time and read only as far as a stage touches it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from numpy.lib.format import open_memmap
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from lib.augment import RandomAffineBatch
from lib.config import DatasetConfig
from lib.errors import UserError
from lib.io import atomic_path, read_json, write_json

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
MEDMNIST_SIZES = (28, 64, 128, 224)
CHUNK_BYTES = 8 * 2**20  # images are read, resized, written and summarised this many bytes at a time
MULTI_CLASS, MULTI_LABEL = "multi-class", "multi-label"  # one class per image | any set of labels per image
MEDMNIST_TASKS = {"binary-class": MULTI_CLASS, "multi-class": MULTI_CLASS,
                  "ordinal-regression": MULTI_CLASS,  # RetinaMNIST's grades, classified as classes
                  "multi-label, binary-class": MULTI_LABEL}

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
    """Every split of a source, before writing."""
    splits: dict[str, SourceSplit]
    classes: list[str]
    test_split: str = "provided by the source"  # where the test split came from, recorded in meta.json
    skipped_files: dict[str, int] | None = None  # imagefolder: non-image files left out, per split folder
    task: str = MULTI_CLASS


def task_of(meta: dict) -> str:
    """The task a processed data set was prepared for; a meta.json without `task` is multi-class."""
    return meta.get("task", MULTI_CLASS)


def is_multi_label(meta: dict) -> bool:
    return task_of(meta) == MULTI_LABEL


def _chunks(n: int, row_bytes: int) -> Iterator[slice]:
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    return (slice(start, min(start + step, n)) for start in range(0, n, step))


def _row_bytes(images: np.ndarray) -> int:
    return int(np.prod(images.shape[1:])) * images.itemsize


# ---------------------------------------------------------------- sources

def load_source(cfg: DatasetConfig, seed: int) -> RawDataset:
    """The configured source's splits, with a stratified test split carved from train when it has none."""
    loaders = {"medmnist": _load_medmnist, "imagefolder": _load_imagefolder, "arrays": _load_arrays}
    raw = loaders[cfg.source](cfg)
    (_check_label_matrices if raw.task == MULTI_LABEL else _check_labels)(raw.splits, raw.classes)
    if "test" not in raw.splits:
        raw.splits["train"], raw.splits["test"] = _carve(raw.splits["train"], cfg.test_fraction, seed)
        how = "stratified" if raw.task == MULTI_CLASS else "at random"
        raw.test_split = f"carved from train: {cfg.test_fraction:.0%} {how}, seed {seed}"
    return raw


def _carve(train: SourceSplit, fraction: float, seed: int) -> tuple[SourceSplit, SourceSplit]:
    """Stratified by class; a multi-label split is carved at random (its label combinations are too many)."""
    stratify = train.labels if train.labels.ndim == 1 else None
    try:
        train_rows, test_rows = train_test_split(np.arange(len(train)), test_size=fraction,
                                                 stratify=stratify, random_state=seed)
    except ValueError as err:
        raise UserError(f"dataset.test_fraction: cannot carve a stratified {fraction:.0%} test split from "
                        f"the {len(train)} train images ({err}); add more images per class or give the "
                        "source its own test split") from err
    return train.subset(train_rows), train.subset(test_rows)


def _array_reader(images: np.ndarray, size: int, scale: float | None = None) -> Reader:
    """Rows of an NHWC array (in memory or memory-mapped) → uint8 at `size`; `scale` rounds floats to 0–255."""
    def read(rows: np.ndarray) -> np.ndarray:
        chunk = images[rows]
        if scale is not None:
            chunk = np.rint(chunk * scale)
        return resize(chunk.astype(np.uint8, copy=False), size)
    return read


def _load_medmnist(cfg: DatasetConfig) -> RawDataset:
    import medmnist

    name = cfg.name.lower()
    if name not in medmnist.INFO:
        known = sorted(k for k, v in medmnist.INFO.items() if not k.endswith("3d"))
        raise UserError(f"dataset.name: unknown MedMNIST data set {cfg.name!r}; "
                        f"2D names are {', '.join(known)}")
    info = medmnist.INFO[name]
    task = MEDMNIST_TASKS.get(info["task"])
    if task is None or name.endswith("3d"):
        raise UserError(f"dataset.name: {name} is a {'3D' if name.endswith('3d') else info['task']} data set; "
                        f"this pipeline trains 2D classifiers ({', '.join(MEDMNIST_TASKS)} tasks)")
    size = next((s for s in MEDMNIST_SIZES if s >= cfg.image_size), MEDMNIST_SIZES[-1])
    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    data_class = getattr(medmnist, info["python_class"])
    splits = {}
    for split in SPLITS:
        try:
            ds = data_class(split=split, root=str(root), size=size, download=False)
        except RuntimeError:
            try:
                ds = data_class(split=split, root=str(root), size=size, download=True)
            except Exception as err:
                filename = f"{name}.npz" if size == 28 else f"{name}_{size}.npz"
                raise UserError(
                    f"MedMNIST {name} ({size} px) is not in {root} and could not be downloaded "
                    f"({err}); put {filename} in {root} or allow network access") from err
        images = ds.imgs if ds.imgs.ndim == 4 else ds.imgs[..., None]
        labels = ds.labels.astype(np.uint8) if task == MULTI_LABEL else ds.labels.reshape(-1).astype(np.int64)
        splits[split] = SourceSplit(labels, _array_reader(images, cfg.image_size))
    classes = [info["label"][str(i)] for i in range(len(info["label"]))]
    return RawDataset(splits, classes, task=task)


def _load_imagefolder(cfg: DatasetConfig) -> RawDataset:
    """`root/<split>/<class>/*` or the class-first `root/<class>/<split>/*`; files are read when written."""
    root = Path(cfg.root)
    subdirs = _subdirs(root)
    if (root / "train").is_dir():
        folders = {s: {c.name: c for c in _subdirs(root / s)} for s in SPLITS if (root / s).is_dir()}
    elif subdirs and all((c / "train").is_dir() for c in subdirs):
        folders = {s: {c.name: c / s for c in subdirs if (c / s).is_dir()} for s in SPLITS}
        folders = {s: f for s, f in folders.items() if f}
    else:
        raise UserError(f"dataset.root: {root} fits neither ImageFolder layout: expected "
                        f"{root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg (optional test/), "
                        f"or {root}/<class>/train/*.jpg and {root}/<class>/val/*.jpg")
    if "val" not in folders:
        raise UserError(f"dataset.root: {root} has a train split but no val split; add val/<class>/ "
                        "folders (the validation split chooses the best checkpoint)")
    classes = sorted(folders["train"])
    if not classes:
        raise UserError(f"dataset.root: no class folders found for the train split under {root}")
    for split, by_class in folders.items():
        missing = sorted(set(classes) - set(by_class))
        extra = sorted(set(by_class) - set(classes))
        if missing or extra:
            raise UserError(f"dataset.root: split {split!r} does not have the same classes as train "
                            f"(missing: {missing or 'none'}, not in train: {extra or 'none'}); "
                            "every split needs one folder per class")
    splits, skipped = {}, {}
    for split, by_class in folders.items():
        files, labels, others = _list_split(by_class, classes)
        splits[split] = SourceSplit(labels, _file_reader(files, cfg.image_size))
        skipped[split] = others
    _warn_skipped(root, [p for others in skipped.values() for p in others])
    return RawDataset(splits, classes, skipped_files={s: len(others) for s, others in skipped.items()})


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_split(by_class: dict[str, Path], classes: list[str]) -> tuple[list[Path], np.ndarray, list[Path]]:
    """The split's image files and their labels, and the other entries of its class folders."""
    files, labels, others = [], [], []
    for label, name in enumerate(classes):
        entries = sorted(by_class[name].iterdir())
        images = [p for p in entries if _is_image_file(p)]
        if not images:
            raise UserError(f"class folder {by_class[name]} holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}); every class needs at least one")
        files += images
        labels += [label] * len(images)
        others += [p for p in entries if not _is_image_file(p)]
    return files, np.asarray(labels, dtype=np.int64), others


def _is_image_file(path: Path) -> bool:
    """Hidden files (`.DS_Store`, macOS `._x.png` forks) are never data, whatever their suffix."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _warn_skipped(root: Path, skipped: list[Path]) -> None:
    if skipped:
        names = ", ".join(str(p.relative_to(root)) for p in skipped[:3])
        more = ", …" if len(skipped) > 3 else ""
        print(f"warning: skipped {len(skipped)} non-image entr{'y' if len(skipped) == 1 else 'ies'} in the "
              f"class folders of {root} ({names}{more}); images need one of the suffixes "
              f"{', '.join(sorted(IMAGE_SUFFIXES))}", file=sys.stderr)


def _file_reader(files: list[Path], size: int) -> Reader:
    """Rows → decoded images; a chunk whose images are all gray comes back with one channel."""
    def read(rows: np.ndarray) -> np.ndarray:
        images = np.stack([read_image(files[i], size) for i in rows])
        return images[..., :1] if _is_grayscale(images) else images
    return read


def read_image(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float scans: rescale, don't clip
                pixels = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
                img = Image.fromarray(np.clip(np.rint(pixels * 255.0 / top), 0, 255).astype(np.uint8), "L")
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"cannot read image {path}: {err}; remove or replace the file") from err


def _is_grayscale(images: np.ndarray) -> bool:
    return bool((images == images[..., :1]).all())


def _load_arrays(cfg: DatasetConfig) -> RawDataset:
    """`X_<split>.npy` (memory-mapped) / `y_<split>.npy`; NHWC or NCHW; uint8 or float.

    Labels are class indices, one-hot rows, or a 0/1 matrix (N, L) of L labels per image: the data set is
    multi-label when some split's matrix has a row that is not one-hot (no 1, or several).
    """
    root = Path(cfg.root)
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
    task = _arrays_task([y for _, _, y in found.values()])
    to_labels = _label_matrix if task == MULTI_LABEL else _labels_to_int
    splits = {}
    for split, (x_path, y_path, y) in found.items():
        x = np.load(x_path, mmap_mode="r", allow_pickle=False)
        y = to_labels(y, y_path)
        if len(x) != len(y):
            raise UserError(f"{x_path.name} has {len(x)} images but {y_path.name} has {len(y)} labels")
        splits[split] = SourceSplit(y, _images_reader(x, x_path, cfg.image_size))
    classes_file = root / "classes.txt"
    if classes_file.exists():
        classes = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
    elif task == MULTI_LABEL:
        classes = [str(i) for i in range(splits["train"].labels.shape[1])]
    else:
        classes = [str(i) for i in range(int(max(s.labels.max(initial=0) for s in splits.values())) + 1)]
    return RawDataset(splits, classes, task=task)


def _arrays_task(labels: list[np.ndarray]) -> str:
    """Multi-label when a 2-D label array (N, L > 1) has a row that is not one-hot; one-hot stays single-label."""
    for y in labels:
        if y.ndim == 2 and y.shape[1] > 1 and not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            return MULTI_LABEL
    return MULTI_CLASS


def _label_matrix(y: np.ndarray, path: Path) -> np.ndarray:
    """A multi-label split's labels: a 0/1 matrix (N, L) → uint8."""
    if y.ndim != 2 or y.shape[1] < 2:
        raise UserError(f"{path}: labels of shape {y.shape} in a multi-label data set (another split has a "
                        "0/1 label matrix); give every split a 0/1 matrix (N, L) with one column per label")
    if not np.isin(y, (0, 1)).all():
        raise UserError(f"{path}: a 2-D label matrix must hold only 0 and 1 (one column per label, 1 = "
                        f"present); found values {np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()}")
    return y.astype(np.uint8)


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
        return _array_reader(x, size, scale=255.0 if hi <= 1.0 else 1.0)
    if lo < 0 or hi > 255:
        raise UserError(f"{path}: images must be uint8 (0–255) or float; got {x.dtype} values {lo}..{hi}")
    return _array_reader(x, size)


def _value_range(x: np.ndarray) -> tuple[float, float]:
    """Smallest and largest value, a chunk at a time (a NaN anywhere comes out as NaN)."""
    ranges = [(x[rows].min(), x[rows].max()) for rows in _chunks(len(x), _row_bytes(x))] or [(0, 0)]
    lows, highs = zip(*ranges)
    return float(np.min(lows)), float(np.max(highs))


def _labels_to_int(y: np.ndarray, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise UserError(f"{path}: 2-D labels must be one-hot (a single 1 per row); got shape {y.shape}")
        y = y.argmax(axis=1)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise UserError(f"{path}: labels must be integers of shape (N,) or one-hot (N, K); "
                        f"got {y.dtype} of shape {y.shape}")
    return y.astype(np.int64)


def _check_labels(splits: dict[str, SourceSplit], classes: list[str]) -> None:
    if len(classes) < 2:
        raise UserError(f"found {len(classes)} class(es); a classifier needs at least 2")
    for split, source in splits.items():
        y = source.labels
        if len(y) == 0:
            raise UserError(f"split {split!r} is empty")
        if y.min() < 0 or y.max() >= len(classes):
            raise UserError(f"split {split!r}: labels must lie in 0..{len(classes) - 1} "
                            f"(classes: {', '.join(classes)}); found {y.min()}..{y.max()}")
    missing = sorted(set(range(len(classes))) - set(splits["train"].labels.tolist()))
    if missing:
        raise UserError(f"the train split has no image of class(es) {[classes[i] for i in missing]}")


def _check_label_matrices(splits: dict[str, SourceSplit], labels: list[str]) -> None:
    """Multi-label: one column per label name in every split; each label both present and absent in train."""
    for split, source in splits.items():
        if len(source) == 0:
            raise UserError(f"split {split!r} is empty")
        if source.labels.shape[1] != len(labels):
            raise UserError(f"split {split!r} has {source.labels.shape[1]} label columns but there are "
                            f"{len(labels)} label names ({', '.join(labels)}); make classes.txt list one "
                            "name per column")
    train = splits["train"].labels
    constant = [name for name, column in zip(labels, train.T) if column.min() == column.max()]
    if constant:
        raise UserError(f"label(s) {constant} are present on every train image or on none; each label "
                        "needs positive and negative training images")


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 NHWC images to size × size (bilinear), leaving the right size untouched."""
    if images.shape[1:3] == (size, size):
        return images
    mode = "L" if images.shape[-1] == 1 else "RGB"
    out = [np.asarray(Image.fromarray(img.squeeze(-1) if mode == "L" else img, mode)
                      .resize((size, size), Image.Resampling.BILINEAR)) for img in images]
    return np.stack(out).reshape(len(images), size, size, images.shape[-1])


# ---------------------------------------------------------------- processed format

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
            **({"name": cfg.name} if cfg.source == "medmnist" else {}),
            "classes": raw.classes,
            **({"task": raw.task} if raw.task != MULTI_CLASS else {}),
            "image_size": cfg.image_size,
            "channels": channels,
            "mean": mean,
            "std": std,
            "test_split": raw.test_split,
            "counts": {split: class_counts(y, raw.classes) for split, (_, y) in splits.items()},
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
    for chunk in _chunks(len(split), size * size * 3):
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
    for chunk in _chunks(len(narrow), _row_bytes(wide)):
        wide[chunk] = narrow[chunk]
    wide.flush()
    os.replace(wide_path, path)  # the open map follows the file to its new name
    return wide


def class_counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    """Images of each class; for a multi-label matrix, images on which each label is present."""
    if labels.ndim == 2:
        return {c: int(labels[:, i].sum()) for i, c in enumerate(classes)}
    return {c: int((labels == i).sum()) for i, c in enumerate(classes)}


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images scaled to [0, 1], rounded to 6 decimals.

    Computed from exact counts of the 256 pixel values, a chunk at a time: memory stays flat and the
    result is the same however the images are chunked (a running float sum would drift with the chunking).
    """
    channels = images.shape[-1]
    counts = np.zeros((channels, 256), dtype=np.int64)
    for chunk in _chunks(len(images), _row_bytes(images)):
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
        for chunk in _chunks(len(images), _row_bytes(images)):
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


# ---------------------------------------------------------------- torch pipeline

def normalize(images: np.ndarray, meta: dict) -> np.ndarray:
    """uint8 NHWC → float32 NHWC, scaled to [0, 1] and standardised with the training statistics."""
    mean = np.asarray(meta["mean"], dtype=np.float32)
    std = np.asarray(meta["std"], dtype=np.float32)
    return (images.astype(np.float32) / 255.0 - mean) / std


class ImageDataset(Dataset):
    """uint8 NHWC arrays → normalised CHW float tensors (augmentation is applied per batch, by the loader)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, meta: dict):
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)  # a view: no copy, memory-mapped stays so
        self.labels = torch.from_numpy(labels)
        self.transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(meta["mean"], meta["std"])])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


def make_loader(images: np.ndarray, labels: np.ndarray, meta: dict, batch_size: int, *,
                shuffle: bool = False, augment: bool = False, seed: int = 0,
                device: torch.device | None = None, workers: int = 0,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    """Batches of normalised NCHW images; augmentation is per image but computed on the batch.

    `workers` 0 loads in the training process, the fastest on CPU for small images; for a CUDA
    `device` batches also go into pinned memory so the copy to the GPU can overlap compute.
    With `world_size` > 1 each rank reads its own shard (DistributedSampler, shuffled with `seed`).
    """
    dataset = ImageDataset(images, labels, meta)
    collate = None
    if augment:
        # Small geometric jitter suits medical images, where colour and flips can change meaning.
        fill = [-m / s for m, s in zip(meta["mean"], meta["std"])]
        collate = RandomAffineBatch(degrees=10, translate=0.08, scale=(0.9, 1.1), fill=fill).collate
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    cuda = device is not None and device.type == "cuda"
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      generator=torch.Generator().manual_seed(seed), collate_fn=collate,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=cuda)
