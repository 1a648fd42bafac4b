"""The `medmnist` source: a MedMNIST 2D data set by name, read from `root` or downloaded there.

The `medmnist` package's `INFO` gives the label names, and its task string says which task the labels are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lib.config import DatasetConfig
from lib.errors import UserError
from lib.processed import SPLITS
from lib.sources import RawDataset, SourceSplit, array_reader
from lib.task import MultiLabel, SingleLabel, Task

SIZES = (28, 64, 128, 224)  # the image sizes MedMNIST publishes
TASKS: dict[str, type[Task]] = {"binary-class": SingleLabel, "multi-class": SingleLabel,
                                "ordinal-regression": SingleLabel,  # RetinaMNIST's grades, classified as classes
                                "multi-label, binary-class": MultiLabel}


def load(cfg: DatasetConfig) -> RawDataset:
    import medmnist

    name = cfg.name.lower()
    task_cls = _task(medmnist.INFO, cfg.name)
    info = medmnist.INFO[name]
    size = next((s for s in SIZES if s >= cfg.image_size), SIZES[-1])
    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    data_class = getattr(medmnist, info["python_class"])
    splits = {}
    for split in SPLITS:
        ds = _open(data_class, split, root, name, size)
        images = ds.imgs if ds.imgs.ndim == 4 else ds.imgs[..., None]
        labels = task_cls.parse_labels(ds.labels, root / _file_name(name, size))
        splits[split] = SourceSplit(labels, array_reader(images, cfg.image_size))
    classes = [info["label"][str(i)] for i in range(len(info["label"]))]
    return RawDataset(splits, task_cls(classes), name=cfg.name)


def _task(catalogue: dict[str, dict], requested: str) -> type[Task]:
    """The task of a 2D data set in MedMNIST's catalogue; an unknown name or a 3D set is a UserError."""
    name = requested.lower()
    if name not in catalogue:
        known = sorted(k for k in catalogue if not k.endswith("3d"))
        raise UserError(f"dataset.name: unknown MedMNIST data set {requested!r}; "
                        f"2D names are {', '.join(known)}")
    kind = catalogue[name]["task"]
    if kind not in TASKS or name.endswith("3d"):
        raise UserError(f"dataset.name: {name} is a {'3D' if name.endswith('3d') else kind} data set; "
                        f"this pipeline trains 2D classifiers ({', '.join(TASKS)} tasks)")
    return TASKS[kind]


def _file_name(name: str, size: int) -> str:
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def _open(data_class: type, split: str, root: Path, name: str, size: int) -> Any:
    """The split from the file in `root`, downloaded there first when it is missing."""
    try:
        return data_class(split=split, root=str(root), size=size, download=False)
    except RuntimeError:
        try:
            return data_class(split=split, root=str(root), size=size, download=True)
        except Exception as err:
            raise UserError(
                f"MedMNIST {name} ({size} px) is not in {root} and could not be downloaded "
                f"({err}); put {_file_name(name, size)} in {root} or allow network access") from err
