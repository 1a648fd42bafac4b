"""Data set sources → one processed format, and the torch data pipeline every stage shares.

Processed format (what `prepare_data` writes and every later stage reads):
`<dir>/{train,val,test}.npz` with `images` uint8 (N, H, W, C) and `labels` int64 (N,), plus `meta.json`
(class names, counts, normalisation statistics of the training split, image size, channels, content hash).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from lib.augment import RandomAffineBatch
from lib.config import DatasetConfig
from lib.io import atomic_path, read_json, write_json

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
MEDMNIST_SIZES = (28, 64, 128, 224)


@dataclass
class RawDataset:
    """Every split as uint8 NHWC images and int labels, before writing."""
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    classes: list[str]
    test_split: str  # where the test split came from, recorded in meta.json


# ---------------------------------------------------------------- sources

def load_source(cfg: DatasetConfig, seed: int) -> RawDataset:
    loaders = {"medmnist": _load_medmnist, "imagefolder": _load_imagefolder, "arrays": _load_arrays}
    splits, classes = loaders[cfg.source](cfg)
    test_split = "provided by the source"
    if "test" not in splits:
        x, y = splits["train"]
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=cfg.test_fraction, stratify=y, random_state=seed)
        splits["train"], splits["test"] = (x_train, y_train), (x_test, y_test)
        test_split = f"carved from train: {cfg.test_fraction:.0%} stratified, seed {seed}"
    splits = {name: (resize(x, cfg.image_size), y) for name, (x, y) in splits.items()}
    _check_labels(splits, classes)
    return RawDataset(splits, classes, test_split)


def _load_medmnist(cfg: DatasetConfig) -> tuple[dict, list[str]]:
    import medmnist

    name = cfg.name.lower()
    if name not in medmnist.INFO:
        known = sorted(k for k, v in medmnist.INFO.items() if not k.endswith("3d"))
        raise ValueError(f"dataset.name: unknown MedMNIST data set {cfg.name!r}; "
                         f"2D names are {', '.join(known)}")
    info = medmnist.INFO[name]
    if info["task"] not in ("binary-class", "multi-class") or name.endswith("3d"):
        raise ValueError(f"dataset.name: {name} is a {info['task']} task; this pipeline trains "
                         "single-label 2D classifiers (binary-class or multi-class)")
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
                raise RuntimeError(
                    f"MedMNIST {name} ({size} px) is not in {root} and could not be downloaded "
                    f"({err}); put {filename} in {root} or allow network access") from err
        images = ds.imgs if ds.imgs.ndim == 4 else ds.imgs[..., None]
        splits[split] = (images.astype(np.uint8), ds.labels.reshape(-1).astype(np.int64))
    classes = [info["label"][str(i)] for i in range(len(info["label"]))]
    return splits, classes


def _load_imagefolder(cfg: DatasetConfig) -> tuple[dict, list[str]]:
    """`root/<split>/<class>/*` or the class-first `root/<class>/<split>/*`."""
    root = Path(cfg.root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if (root / "train").is_dir():
        folders = {s: {c.name: c for c in _subdirs(root / s)} for s in SPLITS if (root / s).is_dir()}
    elif subdirs and all((c / "train").is_dir() for c in subdirs):
        folders = {s: {c.name: c / s for c in subdirs if (c / s).is_dir()} for s in SPLITS}
        folders = {s: f for s, f in folders.items() if f}
    else:
        raise ValueError(f"dataset.root: {root} fits neither ImageFolder layout: expected "
                         f"{root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg (optional test/), "
                         f"or {root}/<class>/train/*.jpg and {root}/<class>/val/*.jpg")
    if "val" not in folders:
        raise ValueError(f"dataset.root: {root} has a train split but no val split; add val/<class>/ "
                         "folders (the validation split chooses the best checkpoint)")
    classes = sorted(folders["train"])
    if not classes:
        raise ValueError(f"dataset.root: no class folders found for the train split under {root}")
    for split, by_class in folders.items():
        missing = sorted(set(classes) - set(by_class))
        extra = sorted(set(by_class) - set(classes))
        if missing or extra:
            raise ValueError(f"dataset.root: split {split!r} does not have the same classes as train "
                             f"(missing: {missing or 'none'}, not in train: {extra or 'none'}); "
                             "every split needs one folder per class")
    loaded = {s: _read_split(by_class, classes, cfg.image_size) for s, by_class in folders.items()}
    if all(_is_grayscale(x) for x, _ in loaded.values()):
        loaded = {s: (x[..., :1], y) for s, (x, y) in loaded.items()}
    return loaded, classes


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_split(by_class: dict[str, Path], classes: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in by_class[name].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"class folder {by_class[name]} holds no images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))}); every class needs at least one")
        images += [read_image(f, size) for f in files]
        labels += [label] * len(files)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


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
        raise ValueError(f"cannot read image {path}: {err}; remove or replace the file") from err


def _is_grayscale(images: np.ndarray) -> bool:
    return bool((images == images[..., :1]).all())


def _load_arrays(cfg: DatasetConfig) -> tuple[dict, list[str]]:
    """`X_<split>.npy` / `y_<split>.npy`; labels as ints or one-hot; NHWC or NCHW; uint8 or float."""
    root = Path(cfg.root)
    splits = {}
    for split in SPLITS:
        x_path, y_path = root / f"X_{split}.npy", root / f"y_{split}.npy"
        if not x_path.exists() and not y_path.exists() and split == "test":
            continue
        for p in (x_path, y_path):
            if not p.exists():
                raise ValueError(f"dataset.root: {p} not found; the arrays source needs X_train.npy, "
                                 "y_train.npy, X_val.npy, y_val.npy (X_test.npy/y_test.npy optional)")
        x = _images_to_nhwc_uint8(np.load(x_path, allow_pickle=False), x_path)
        y = _labels_to_int(np.load(y_path, allow_pickle=False), y_path)
        if len(x) != len(y):
            raise ValueError(f"{x_path.name} has {len(x)} images but {y_path.name} has {len(y)} labels")
        splits[split] = (x, y)
    classes_file = root / "classes.txt"
    if classes_file.exists():
        classes = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
    else:
        classes = [str(i) for i in range(int(max(y.max() for _, y in splits.values())) + 1)]
    return splits, classes


def _images_to_nhwc_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{path}: images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W); "
                         f"got {x.shape}")
    if x.shape[-1] not in (1, 3):
        if x.shape[1] not in (1, 3):
            raise ValueError(f"{path}: shape {x.shape} has no channel axis of size 1 or 3 "
                             "(expected NHWC or NCHW with 1 or 3 channels)")
        x = x.transpose(0, 2, 3, 1)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 255:
            raise ValueError(f"{path}: float images must be finite and in [0, 1] or [0, 255]")
        x = x * 255.0 if x.max() <= 1.0 else x
        return np.rint(x).astype(np.uint8)
    if not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() > 255:
        raise ValueError(f"{path}: images must be uint8 (0–255) or float; got dtype {x.dtype}")
    return x.astype(np.uint8)


def _labels_to_int(y: np.ndarray, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise ValueError(f"{path}: 2-D labels must be one-hot (a single 1 per row); got shape {y.shape}")
        y = y.argmax(axis=1)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"{path}: labels must be integers of shape (N,) or one-hot (N, K); "
                         f"got {y.dtype} of shape {y.shape}")
    return y.astype(np.int64)


def _check_labels(splits: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str]) -> None:
    if len(classes) < 2:
        raise ValueError(f"found {len(classes)} class(es); a classifier needs at least 2")
    for split, (_, y) in splits.items():
        if len(y) == 0:
            raise ValueError(f"split {split!r} is empty")
        if y.min() < 0 or y.max() >= len(classes):
            raise ValueError(f"split {split!r}: labels must lie in 0..{len(classes) - 1} "
                             f"(classes: {', '.join(classes)}); found {y.min()}..{y.max()}")
    missing = sorted(set(range(len(classes))) - set(splits["train"][1].tolist()))
    if missing:
        raise ValueError(f"the train split has no image of class(es) {[classes[i] for i in missing]}")


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
    """Write the processed splits and meta.json into `out_dir`, atomically as a whole folder."""
    x_train = raw.splits["train"][0].astype(np.float64) / 255.0
    digest = hashlib.sha256()
    meta = {
        "source": cfg.source,
        "name": cfg.name,
        "classes": raw.classes,
        "image_size": cfg.image_size,
        "channels": int(x_train.shape[-1]),
        "mean": x_train.mean(axis=(0, 1, 2)).round(6).tolist(),
        "std": x_train.std(axis=(0, 1, 2)).round(6).tolist(),
        "test_split": raw.test_split,
        "counts": {},
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for split in SPLITS:
            x, y = raw.splits[split]
            np.savez(tmp / f"{split}.npz", images=x, labels=y)
            digest.update(x.tobytes())
            digest.update(y.tobytes())
            meta["counts"][split] = {c: int((y == i).sum()) for i, c in enumerate(raw.classes)}
        meta["sha256"] = digest.hexdigest()
        write_json(tmp / "meta.json", meta)
    return meta


def load_meta(processed_dir: str | Path) -> dict:
    path = Path(processed_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the prepare_data stage first (dvc repro)")
    return read_json(path)


def load_split(processed_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(processed_dir) / f"{split}.npz") as npz:
        return npz["images"], npz["labels"]


def normalize(images: np.ndarray, meta: dict) -> np.ndarray:
    """uint8 NHWC → float32 NHWC, scaled to [0, 1] and standardised with the training statistics."""
    mean = np.asarray(meta["mean"], dtype=np.float32)
    std = np.asarray(meta["std"], dtype=np.float32)
    return (images.astype(np.float32) / 255.0 - mean) / std


class ImageDataset(Dataset):
    """uint8 NHWC arrays → normalised CHW float tensors, with optional light augmentation."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, meta: dict, augment: bool):
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)  # a view: no copy
        self.labels = torch.from_numpy(labels)
        steps = [v2.ToDtype(torch.float32, scale=True)]
        if augment:
            # Small geometric jitter suits medical images, where colour and flips can change meaning.
            steps.append(v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1)))
        steps.append(v2.Normalize(meta["mean"], meta["std"]))
        self.transform = v2.Compose(steps)

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
    dataset = ImageDataset(images, labels, meta, augment=False)
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
