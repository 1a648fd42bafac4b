"""Shared fixtures and helpers: tiny synthetic data sets and a copy of params.yaml to mutate."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `lib` importable however pytest is started
    sys.path.insert(0, str(ROOT))

# One intra-op thread: on a small, shared CPU, OpenMP threads waiting on each other make every tiny
# forward pass take ~1 s instead of ~10 ms.
torch.set_num_threads(1)
PARAMS_YAML = ROOT / "params.yaml"
RAW_DIR = ROOT / "data" / "raw"


def save_png(path: Path, array: np.ndarray) -> Path:
    """Save a uint8 (H, W) grayscale or (H, W, 3) RGB array as a PNG, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def class_image(rng: np.random.Generator, label: int, size: int, rgb: bool) -> np.ndarray:
    """A random image whose intensity range identifies its class: class 0 dark (0–99), class 1 bright."""
    lo, hi = (0, 100) if label == 0 else (156, 256)
    shape = (size, size, 3) if rgb else (size, size)
    return rng.integers(lo, hi, shape, dtype=np.uint8)


def make_imagefolder(root: Path, counts: dict[str, int], classes=("cat", "ant"), *, layout="split",
                     size=12, rgb=False, seed=0) -> Path:
    """Write `counts[split]` PNGs per class; layout 'split' = root/split/class, 'class' = root/class/split.

    The class at position i in sorted(classes) gets intensity class i (see `class_image`).
    """
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for label, name in enumerate(sorted(classes)):
            folder = root / split / name if layout == "split" else root / name / split
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                save_png(folder / f"img{i:02d}.png", class_image(rng, label, size, rgb))
    return root


@pytest.fixture(scope="session")
def base_params() -> dict:
    """The project's params.yaml as a plain dict (tests deep-copy it before changing it)."""
    return yaml.safe_load(PARAMS_YAML.read_text())


@pytest.fixture
def params_dict(base_params) -> dict:
    return copy.deepcopy(base_params)


@pytest.fixture
def write_params(tmp_path):
    """Write a params mapping as YAML into tmp_path and return the file's path."""
    def write(data: dict, name: str = "params.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path
    return write


@pytest.fixture
def tiny_meta() -> dict:
    """meta.json-like statistics for 1-channel images."""
    return {"classes": ["a", "b", "c"], "mean": [0.5], "std": [0.25], "channels": 1, "image_size": 8}
