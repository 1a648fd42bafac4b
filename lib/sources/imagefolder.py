"""The `imagefolder` source: one folder per class and split, class names from the folder names.

Always single-label: each image lies in exactly one class folder. Files are listed here and decoded only
when `lib.processed` writes them, a chunk at a time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lib.config import DatasetConfig
from lib.errors import UserError
from lib.images import IMAGE_SUFFIXES, is_image_file, read_image
from lib.processed import SPLITS
from lib.sources import RawDataset, Reader, SourceSplit
from lib.task import SingleLabel


def load(cfg: DatasetConfig) -> RawDataset:
    """`root/<split>/<class>/*` or the class-first `root/<class>/<split>/*`."""
    root = Path(cfg.root)
    folders = _class_folders(root)
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
        labels = SingleLabel.parse_labels(labels, root / split)
        splits[split] = SourceSplit(labels, _file_reader(files, cfg.image_size))
        skipped[split] = others
    _warn_skipped(root, [p for others in skipped.values() for p in others])
    return RawDataset(splits, SingleLabel(classes), skipped_files={s: len(others) for s, others in skipped.items()})


def _class_folders(root: Path) -> dict[str, dict[str, Path]]:
    """Each split's class folders by class name, in whichever of the two layouts `root` has."""
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
    return folders


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_split(by_class: dict[str, Path], classes: list[str]) -> tuple[list[Path], np.ndarray, list[Path]]:
    """The split's image files and their class indices, and the other entries of its class folders."""
    files, labels, others = [], [], []
    for label, name in enumerate(classes):
        entries = sorted(by_class[name].iterdir())
        images = [p for p in entries if is_image_file(p)]
        if not images:
            raise UserError(f"class folder {by_class[name]} holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}); every class needs at least one")
        files += images
        labels += [label] * len(images)
        others += [p for p in entries if not is_image_file(p)]
    return files, np.asarray(labels, dtype=np.int64), others


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


def _is_grayscale(images: np.ndarray) -> bool:
    return bool((images == images[..., :1]).all())
