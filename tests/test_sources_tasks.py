"""Task types as the data sources see them: MedMNIST multi-label (ChestMNIST), ordinal (RetinaMNIST) and
multi-class sets read from local files, and multi-label arrays. The task types' own behaviour (losses,
metrics, prediction, checks, Grad-CAM sampling) is tested in test_task.py."""

from __future__ import annotations


import numpy as np
import pytest

from conftest import make_arrays, make_medmnist_npz
from lib.config import DatasetConfig
from lib.errors import UserError
from lib.processed import SPLITS, load_split, write_processed
from lib.sources import load_source
from lib.task import MultiLabel, SingleLabel, for_meta



PER_SPLIT = {"train": 40, "val": 20, "test": 20}


def medmnist_cfg(root, name: str) -> DatasetConfig:
    return DatasetConfig(source="medmnist", root=str(root), image_size=28, test_fraction=0.15, name=name)


def prepare(cfg: DatasetConfig, out) -> tuple[dict, dict]:
    meta = write_processed(load_source(cfg, 0), cfg, out)
    return meta, {split: load_split(out, split) for split in SPLITS}


# ---------------------------------------------------------------- MedMNIST files, no download

def test_chestmnist_is_multi_label(tmp_path):
    make_medmnist_npz(tmp_path / "raw", "chestmnist", PER_SPLIT, 14, multi_label=True)
    meta, splits = prepare(medmnist_cfg(tmp_path / "raw", "chestmnist"), tmp_path / "p")
    assert meta["task"] == MultiLabel.name and isinstance(for_meta(meta), MultiLabel)
    assert len(meta["classes"]) == 14 and meta["classes"][:2] == ["atelectasis", "cardiomegaly"]
    _, y = splits["train"]
    assert y.shape == (40, 14) and y.dtype == np.uint8
    assert meta["counts"]["train"]["atelectasis"] == int(y[:, 0].sum())


def test_retinamnist_ordinal_grades_are_classes(tmp_path):
    make_medmnist_npz(tmp_path / "raw", "retinamnist", PER_SPLIT, 5, rgb=True)
    meta, splits = prepare(medmnist_cfg(tmp_path / "raw", "retinamnist"), tmp_path / "p")
    assert "task" not in meta and isinstance(for_meta(meta), SingleLabel)  # recorded as before tasks existed
    assert meta["classes"] == ["0", "1", "2", "3", "4"] and meta["channels"] == 3
    _, y = splits["test"]
    assert y.dtype == np.int64 and y.shape == (20,) and set(y.tolist()) == set(range(5))


def test_bloodmnist_multi_class_rgb(tmp_path):
    make_medmnist_npz(tmp_path / "raw", "bloodmnist", PER_SPLIT, 8, rgb=True)
    meta, splits = prepare(medmnist_cfg(tmp_path / "raw", "bloodmnist"), tmp_path / "p")
    assert len(meta["classes"]) == 8 and meta["channels"] == 3 and "task" not in meta
    x, y = splits["train"]
    assert x.shape == (40, 28, 28, 3) and sum(meta["counts"]["train"].values()) == 40


def test_medmnist_3d_set_is_refused(tmp_path):
    with pytest.raises(UserError, match="3D"):
        load_source(medmnist_cfg(tmp_path, "organmnist3d"), 0)


# ---------------------------------------------------------------- arrays

def arrays_cfg(root, test_fraction=0.25) -> DatasetConfig:
    return DatasetConfig(source="arrays", root=str(root), image_size=28, test_fraction=test_fraction)


def test_arrays_label_matrix_is_multi_label_and_test_is_carved(tmp_path):
    make_arrays(tmp_path / "a", {"train": 40, "val": 12}, 5, multi_label=True)
    meta, splits = prepare(arrays_cfg(tmp_path / "a"), tmp_path / "p")
    assert meta["task"] == MultiLabel.name and meta["classes"] == [f"label{i}" for i in range(5)]
    assert meta["test_split"] == "carved from train: 25% at random, seed 0"
    assert splits["train"][1].shape == (30, 5) and splits["test"][1].shape == (10, 5)


def test_arrays_label_matrix_must_be_zero_one(tmp_path):
    make_arrays(tmp_path / "a", {"train": 20, "val": 10}, 3, multi_label=True)
    y = np.load(tmp_path / "a/y_val.npy")
    y[0, 0] = 2
    np.save(tmp_path / "a/y_val.npy", y)
    with pytest.raises(UserError, match="only 0 and 1"):
        load_source(arrays_cfg(tmp_path / "a"), 0)


def test_arrays_multi_label_needs_a_matrix_in_every_split(tmp_path):
    make_arrays(tmp_path / "a", {"train": 20, "val": 10}, 3, multi_label=True)
    np.save(tmp_path / "a/y_val.npy", np.zeros(10, dtype=np.int64))
    with pytest.raises(UserError, match="y_val.npy.*0/1 matrix"):
        load_source(arrays_cfg(tmp_path / "a"), 0)


def test_arrays_label_constant_in_train_raises(tmp_path):
    make_arrays(tmp_path / "a", {"train": 20, "val": 10}, 3, multi_label=True)
    y = np.load(tmp_path / "a/y_train.npy")
    y[:, 1] = 0
    np.save(tmp_path / "a/y_train.npy", y)
    with pytest.raises(UserError, match="label1"):
        load_source(arrays_cfg(tmp_path / "a"), 0)


def test_arrays_one_column_is_single_label(tmp_path):
    make_arrays(tmp_path / "a", {"train": 20, "val": 10}, 2)
    np.save(tmp_path / "a/y_train.npy", np.load(tmp_path / "a/y_train.npy")[:, None])
    raw = load_source(arrays_cfg(tmp_path / "a"), 0)
    assert isinstance(raw.task, SingleLabel) and raw.splits["train"].labels.ndim == 1


# ---------------------------------------------------------------- losses
