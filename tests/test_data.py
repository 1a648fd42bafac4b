"""lib.sources, lib.processed, lib.loader: every source → the processed-split store (memory-mapped .npy
files), and the torch data pipeline."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, RAW_DIR, make_imagefolder, save_png
from lib import processed
from lib.config import DatasetConfig
from lib.errors import UserError
from lib.loader import ImageDataset, make_loader
from lib.processed import SPLITS, load_meta, load_split, normalize, write_processed
from lib.sources import RawDataset, SourceSplit, load_source
from lib.task import SingleLabel


def folder_cfg(root, image_size=12, test_fraction=0.2) -> DatasetConfig:
    return DatasetConfig(source="imagefolder", root=str(root), image_size=image_size,
                         test_fraction=test_fraction)


def arrays_cfg(root, image_size=8, test_fraction=0.25) -> DatasetConfig:
    return DatasetConfig(source="arrays", root=str(root), image_size=image_size,
                         test_fraction=test_fraction)


def prepare(cfg: DatasetConfig, out, seed: int = 0) -> tuple[dict, dict]:
    """What the prepare_data stage does: the source written to `out`; returns meta and every split loaded."""
    meta = write_processed(load_source(cfg, seed), cfg, out)
    return meta, {split: load_split(out, split) for split in SPLITS}


def assert_labels_match_intensity(x: np.ndarray, y: np.ndarray) -> None:
    """With `class_image` data, class 0 images are dark and class 1 images bright."""
    means = x.reshape(len(x), -1).mean(axis=1)
    assert (means[y == 0] < 110).all() and (means[y == 1] > 145).all()


# ---------------------------------------------------------------- imagefolder

def test_imagefolder_split_first_layout(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 4, "val": 2, "test": 3}, classes=("cat", "ant"))
    meta, splits = prepare(folder_cfg(root), tmp_path / "p")
    assert meta["classes"] == ["ant", "cat"]  # sorted folder names
    assert meta["test_split"] == "provided by the source"
    assert meta["skipped_files"] == {"train": 0, "val": 0, "test": 0} and "name" not in meta
    for split, n in {"train": 4, "val": 2, "test": 3}.items():
        x, y = splits[split]
        assert x.shape == (2 * n, 12, 12, 1) and x.dtype == np.uint8
        assert y.dtype == np.int64 and np.bincount(y).tolist() == [n, n]
        assert_labels_match_intensity(x, y)


def test_imagefolder_pixels_are_read_unchanged(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    _, splits = prepare(folder_cfg(root), tmp_path / "p")
    expected = np.asarray(Image.open(root / "train" / "ant" / "img00.png"))
    np.testing.assert_array_equal(splits["train"][0][0, ..., 0], expected)


def test_imagefolder_class_first_layout(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 5, "val": 2}, classes=("zebra", "yak"),
                            layout="class")
    meta, splits = prepare(folder_cfg(root, test_fraction=0.2), tmp_path / "p")
    assert meta["classes"] == ["yak", "zebra"]
    assert splits["val"][0].shape == (4, 12, 12, 1)
    assert len(splits["train"][1]) + len(splits["test"][1]) == 10
    for split in ("train", "val", "test"):
        assert_labels_match_intensity(*splits[split])


def test_grayscale_png_gives_one_channel_rgb_gives_three(tmp_path):
    gray = make_imagefolder(tmp_path / "gray", {"train": 2, "val": 1, "test": 1}, rgb=False)
    rgb = make_imagefolder(tmp_path / "rgb", {"train": 2, "val": 1, "test": 1}, rgb=True)
    gray_meta, gray_splits = prepare(folder_cfg(gray), tmp_path / "p_gray")
    assert gray_meta["channels"] == 1 and gray_splits["train"][0].shape[-1] == 1
    rgb_meta, rgb_splits = prepare(folder_cfg(rgb), tmp_path / "p_rgb")
    assert rgb_meta["channels"] == 3 and all(x.shape[-1] == 3 for x, _ in rgb_splits.values())
    expected = np.asarray(Image.open(rgb / "val" / "cat" / "img00.png"))
    np.testing.assert_array_equal(rgb_splits["val"][0][1], expected)


def test_one_colour_image_in_a_later_split_makes_every_split_rgb(tmp_path, monkeypatch):
    """Gray images written before the first colour one are widened to three equal channels."""
    monkeypatch.setattr(processed, "CHUNK_BYTES", 1)  # one image per chunk: the widening happens mid-split
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 2, "test": 1})
    colour = np.zeros((12, 12, 3), np.uint8)
    colour[..., 0] = 200
    save_png(root / "val" / "cat" / "img01.png", colour)
    meta, splits = prepare(folder_cfg(root), tmp_path / "p")
    assert meta["channels"] == 3
    for x, _ in splits.values():
        assert x.shape[-1] == 3
    first_gray = np.asarray(Image.open(root / "train" / "ant" / "img00.png"))
    np.testing.assert_array_equal(splits["train"][0][0], np.repeat(first_gray[..., None], 3, axis=-1))
    np.testing.assert_array_equal(splits["val"][0][3], colour)  # val: ant/img00, ant/img01, cat/img00, cat/img01


def test_images_are_resized_to_image_size(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1}, size=20)
    _, splits = prepare(folder_cfg(root, image_size=8), tmp_path / "p")
    for x, _ in splits.values():
        assert x.shape[1:] == (8, 8, 1)


def test_mixed_sizes_are_all_resized(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1}, size=16)
    save_png(root / "train" / "ant" / "big.png", np.full((30, 24), 10, np.uint8))
    _, splits = prepare(folder_cfg(root, image_size=10), tmp_path / "p")
    assert splits["train"][0].shape == (5, 10, 10, 1)


def test_missing_test_split_is_carved_stratified(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 10, "val": 2}, size=8)
    meta, splits = prepare(folder_cfg(root, image_size=8, test_fraction=0.2), tmp_path / "p", seed=3)
    x_train, y_train = splits["train"]
    x_test, y_test = splits["test"]
    assert len(y_train) == 16 and len(y_test) == 4
    assert np.bincount(y_test).tolist() == [2, 2]
    assert np.bincount(y_train).tolist() == [8, 8]
    assert "carved" in meta["test_split"] and "20%" in meta["test_split"] and "seed 3" in meta["test_split"]
    assert_labels_match_intensity(x_test, y_test)
    # no image is in both train and test
    train_rows = {img.tobytes() for img in x_train}
    assert not any(img.tobytes() in train_rows for img in x_test)


def test_carved_test_split_is_deterministic_for_a_seed(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 10, "val": 2}, size=8)
    cfg = folder_cfg(root, image_size=8, test_fraction=0.2)
    (_, first), (_, second) = prepare(cfg, tmp_path / "one", seed=7), prepare(cfg, tmp_path / "two", seed=7)
    for split in ("train", "test"):
        np.testing.assert_array_equal(first[split][0], second[split][0])
        np.testing.assert_array_equal(first[split][1], second[split][1])


def test_too_few_images_to_carve_a_test_split_raises(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 1, "val": 1})
    with pytest.raises(UserError, match="test_fraction"):
        load_source(folder_cfg(root), 0)


def test_corrupt_image_raises_user_error_naming_file(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    (root / "train" / "cat" / "x.png").write_bytes(b"this is not a png at all \x00\x01\x02")
    with pytest.raises(UserError, match=r"x\.png"):
        prepare(folder_cfg(root), tmp_path / "p")
    assert not (tmp_path / "p").exists()  # nothing half-written


def test_truncated_png_raises_user_error(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    good = (root / "val" / "ant" / "img00.png").read_bytes()
    (root / "val" / "ant" / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match=r"cut\.png"):
        prepare(folder_cfg(root), tmp_path / "p")


def test_non_image_files_are_skipped_warned_and_counted(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    (root / "train" / "ant" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "train" / "cat" / "notes.txt").write_text("scanned on the old machine")
    (root / "test" / "cat" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    meta, splits = prepare(folder_cfg(root), tmp_path / "p")
    assert meta["skipped_files"] == {"train": 2, "val": 0, "test": 1}
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["skipped_files"] == meta["skipped_files"]
    assert {split: len(y) for split, (_, y) in splits.items()} == {"train": 4, "val": 2, "test": 2}
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "skipped 3" in warning[0]
    assert "notes.txt" in warning[0] and ".DS_Store" in warning[0]


def test_class_missing_from_val_raises(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1})
    for f in (root / "val" / "cat").iterdir():
        f.unlink()
    (root / "val" / "cat").rmdir()
    with pytest.raises(UserError, match="val") as err:
        load_source(folder_cfg(root), 0)
    assert "cat" in str(err.value)


def test_extra_class_in_test_raises(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    save_png(root / "test" / "dog" / "a.png", np.zeros((12, 12), np.uint8))
    with pytest.raises(UserError, match="dog"):
        load_source(folder_cfg(root), 0)


def test_empty_class_folder_raises(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    for split in ("train", "val", "test"):
        (root / split / "bee").mkdir()
    (root / "train" / "bee" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match="bee"):
        load_source(folder_cfg(root), 0)


def test_tree_fitting_neither_layout_raises(tmp_path):
    root = tmp_path / "d"
    save_png(root / "cat" / "a.png", np.zeros((8, 8), np.uint8))
    save_png(root / "ant" / "b.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(UserError, match="neither"):
        load_source(folder_cfg(root), 0)


def test_empty_root_raises(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError):
        load_source(folder_cfg(tmp_path / "d"), 0)


def test_root_that_is_a_file_raises_at_validation(tmp_path):
    archive = tmp_path / "images.zip"
    archive.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match=r"dataset\.root: .*images\.zip.* is a file; point it at the folder"):
        folder_cfg(archive)


@pytest.mark.parametrize("layout", ["split", "class"])
def test_missing_val_split_raises(tmp_path, layout):
    root = make_imagefolder(tmp_path / "d", {"train": 3}, layout=layout)
    with pytest.raises(UserError, match="val"):
        load_source(folder_cfg(root), 0)


def test_sixteen_bit_grayscale_png_keeps_its_contrast(tmp_path):
    """16-bit PNGs (common for X-rays) must be scaled to 8 bit, not clipped at 255."""
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1}, size=8)
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)  # 0 … 63 000
    Image.fromarray(ramp).save(root / "train" / "ant" / "wide.png")
    with Image.open(root / "train" / "ant" / "wide.png") as img:
        assert img.mode.startswith("I")  # really a 16-bit file
    _, splits = prepare(folder_cfg(root, image_size=8), tmp_path / "p")
    x, _ = splits["train"]
    loaded = x[2, ..., 0].astype(int).ravel()  # files sort as img00, img01, wide
    assert np.all(np.diff(loaded) >= 0)       # order of intensities preserved
    assert len(np.unique(loaded)) >= 32        # not saturated to a couple of values


# ---------------------------------------------------------------- arrays

def write_arrays(root, splits: dict, classes: list[str] | None = None):
    root.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in splits.items():
        np.save(root / f"X_{split}.npy", x)
        np.save(root / f"y_{split}.npy", y)
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def assert_arrays_refused(tmp_path, x: np.ndarray, match: str) -> None:
    """Four images `x` as both train and val: the arrays source refuses them with a UserError matching `match`."""
    y = np.array([0, 1, 0, 1])
    root = write_arrays(tmp_path / "a", {"train": (x, y), "val": (x, y)})
    with pytest.raises(UserError, match=match):
        load_source(arrays_cfg(root), 0)


def random_split(rng, n, shape=(8, 8, 1), k=2):
    y = np.arange(n) % k
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), y


def test_arrays_nhwc_uint8(tmp_path):
    rng = np.random.default_rng(0)
    splits = {"train": random_split(rng, 8), "val": random_split(rng, 4), "test": random_split(rng, 4)}
    meta, written = prepare(arrays_cfg(write_arrays(tmp_path / "a", splits)), tmp_path / "p")
    assert meta["classes"] == ["0", "1"] and meta["test_split"] == "provided by the source"
    for name, (x, y) in splits.items():
        np.testing.assert_array_equal(written[name][0], x)
        np.testing.assert_array_equal(written[name][1], y)
        assert written[name][1].dtype == np.int64


def test_arrays_nchw_float_in_unit_range(tmp_path):
    rng = np.random.default_rng(1)
    nhwc = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    nchw_float = nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    y = np.arange(6) % 2
    _, written = prepare(arrays_cfg(write_arrays(tmp_path / "a", {
        "train": (nchw_float, y), "val": (nchw_float[:2], y[:2]), "test": (nchw_float[:2], y[:2])})),
        tmp_path / "p")
    assert written["train"][0].shape == (6, 8, 8, 3)
    assert written["train"][0].dtype == np.uint8
    np.testing.assert_array_equal(written["train"][0], nhwc)


def test_arrays_float_in_byte_range_is_rounded(tmp_path):
    x = np.array([0.0, 1.0, 2.4, 2.6, 254.5, 255.0], np.float64).reshape(6, 1, 1, 1) * np.ones((1, 8, 8, 1))
    y = np.arange(6) % 2
    _, written = prepare(arrays_cfg(write_arrays(tmp_path / "a", {"train": (x, y), "val": (x, y), "test": (x, y)})),
                         tmp_path / "p")
    assert written["val"][0][:, 0, 0, 0].tolist() == [0, 1, 2, 3, 254, 255]  # 1.0 is a byte value here


@pytest.mark.parametrize("bad", [np.nan, np.inf, -0.5, 300.0])
def test_arrays_float_out_of_range_raises(tmp_path, bad):
    x = np.zeros((4, 8, 8, 1), np.float32)
    x[3, 2, 2, 0] = bad
    assert_arrays_refused(tmp_path, x, "finite and in")


def test_arrays_grayscale_nhw(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    y = np.arange(6) % 2
    _, written = prepare(arrays_cfg(write_arrays(tmp_path / "a", {
        "train": (x, y), "val": (x[:2], y[:2]), "test": (x[:2], y[:2])})), tmp_path / "p")
    assert written["train"][0].shape == (6, 8, 8, 1)
    np.testing.assert_array_equal(written["train"][0][..., 0], x)


@pytest.mark.parametrize("encode", [
    lambda y: np.eye(3, dtype=np.float32)[y],   # one-hot
    lambda y: y[:, None],                       # (N, 1)
    lambda y: y.astype(np.float64),             # whole-number floats
], ids=["one_hot", "column", "float"])
def test_arrays_label_encodings(tmp_path, encode):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    y = np.array([0, 1, 2, 2, 1, 0])
    raw = load_source(arrays_cfg(write_arrays(tmp_path / "a", {
        "train": (x, encode(y)), "val": (x[:3], encode(y[:3])), "test": (x[:3], encode(y[:3]))})), 0)
    np.testing.assert_array_equal(raw.splits["train"].labels, y)
    assert raw.splits["train"].labels.dtype == np.int64
    assert raw.classes == ["0", "1", "2"]


def test_arrays_wrong_image_shape_raises(tmp_path):
    assert_arrays_refused(tmp_path, np.zeros((4, 5, 5, 7), np.uint8), "X_train")


def test_arrays_mismatched_lengths_raise(tmp_path):
    rng = np.random.default_rng(4)
    x, y = random_split(rng, 6)
    root = write_arrays(tmp_path / "a", {"train": (x, y[:5]), "val": (x, y)})
    with pytest.raises(UserError, match="6 images.*5 labels"):
        load_source(arrays_cfg(root), 0)


def test_arrays_missing_val_raises(tmp_path):
    rng = np.random.default_rng(5)
    root = write_arrays(tmp_path / "a", {"train": random_split(rng, 8)})
    with pytest.raises(UserError, match="X_val"):
        load_source(arrays_cfg(root), 0)


def test_arrays_classes_txt_names_are_used(tmp_path):
    rng = np.random.default_rng(6)
    splits = {"train": random_split(rng, 8), "val": random_split(rng, 4), "test": random_split(rng, 4)}
    raw = load_source(arrays_cfg(write_arrays(tmp_path / "a", splits, ["healthy", "sick"])), 0)
    assert raw.classes == ["healthy", "sick"]


def test_arrays_label_beyond_classes_txt_raises(tmp_path):
    rng = np.random.default_rng(7)
    splits = {"train": random_split(rng, 9, k=3), "val": random_split(rng, 3, k=3)}
    root = write_arrays(tmp_path / "a", splits, ["healthy", "sick"])
    with pytest.raises(UserError, match="labels must lie"):
        load_source(arrays_cfg(root, test_fraction=0.34), 0)


def test_arrays_are_resized_and_test_carved(tmp_path):
    rng = np.random.default_rng(8)
    splits = {"train": random_split(rng, 8, shape=(16, 16, 3)), "val": random_split(rng, 4, shape=(16, 16, 3))}
    cfg = arrays_cfg(write_arrays(tmp_path / "a", splits), image_size=8, test_fraction=0.25)
    meta, written = prepare(cfg, tmp_path / "p")
    assert {name: x.shape for name, (x, _) in written.items()} == {
        "train": (6, 8, 8, 3), "val": (4, 8, 8, 3), "test": (2, 8, 8, 3)}
    assert "carved" in meta["test_split"]
    assert "name" not in meta and "skipped_files" not in meta


# ---------------------------------------------------------------- medmnist

@pytest.fixture(scope="module")
def pneumonia(tmp_path_factory):
    if not (RAW_DIR / "pneumoniamnist.npz").is_file():
        pytest.skip("data/raw/pneumoniamnist.npz is not present")
    cfg = DatasetConfig(source="medmnist", root=str(RAW_DIR), image_size=28, test_fraction=0.15,
                        name="pneumoniamnist")
    return prepare(cfg, tmp_path_factory.mktemp("pneumonia") / "processed", seed=42)


def test_medmnist_loads_shipped_file(pneumonia):
    meta, splits = pneumonia
    assert {name: len(y) for name, (_, y) in splits.items()} == {"train": 4708, "val": 524, "test": 624}
    assert meta["classes"] == ["normal", "pneumonia"] and meta["name"] == "pneumoniamnist"
    assert meta["test_split"] == "provided by the source"
    x, y = splits["train"]
    assert x.shape[1:] == (28, 28, 1) and x.dtype == np.uint8
    assert set(np.unique(y)) == {0, 1}


def test_medmnist_statistics_and_hash_match_a_one_shot_computation(pneumonia):
    """The chunked statistics and hash equal those of the whole arrays held in memory at once."""
    meta, splits = pneumonia
    x_train = np.asarray(splits["train"][0], dtype=np.float64) / 255.0
    assert meta["mean"] == x_train.mean(axis=(0, 1, 2)).round(6).tolist()
    assert meta["std"] == x_train.std(axis=(0, 1, 2)).round(6).tolist()
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(np.asarray(splits[split][0]).tobytes())
        digest.update(splits[split][1].tobytes())
    assert meta["sha256"] == digest.hexdigest()


def test_medmnist_unknown_name_lists_names():
    cfg = DatasetConfig(source="medmnist", root=str(RAW_DIR), image_size=28, test_fraction=0.15,
                        name="notamnist")
    with pytest.raises(UserError, match="notamnist") as err:
        load_source(cfg, 0)
    assert "pneumoniamnist" in str(err.value) and "pathmnist" in str(err.value)


# ---------------------------------------------------------------- processed format

def in_memory(x: np.ndarray, y: np.ndarray) -> SourceSplit:
    return SourceSplit(y, lambda rows: x[rows])


@pytest.fixture
def small_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(9)
    return {"train": random_split(rng, 8, shape=(8, 8, 3)), "val": random_split(rng, 4, shape=(8, 8, 3)),
            "test": random_split(rng, 6, shape=(8, 8, 3))}


@pytest.fixture
def small_raw(small_arrays) -> RawDataset:
    splits = {split: in_memory(x, y) for split, (x, y) in small_arrays.items()}
    return RawDataset(splits, SingleLabel(["neg", "pos"]))


@pytest.fixture
def small_cfg(tmp_path) -> DatasetConfig:
    return arrays_cfg(tmp_path, image_size=8)


def test_write_processed_round_trip(tmp_path, small_arrays, small_raw, small_cfg):
    out = tmp_path / "processed"
    meta = write_processed(small_raw, small_cfg, out)
    assert load_meta(out) == meta
    assert meta["classes"] == ["neg", "pos"]
    assert meta["channels"] == 3 and meta["image_size"] == 8
    assert meta["counts"] == {"train": {"neg": 4, "pos": 4}, "val": {"neg": 2, "pos": 2},
                              "test": {"neg": 3, "pos": 3}}
    assert len(meta["sha256"]) == 64 and int(meta["sha256"], 16) >= 0
    for split in SPLITS:
        x, y = load_split(out, split)
        np.testing.assert_array_equal(x, small_arrays[split][0])
        np.testing.assert_array_equal(y, small_arrays[split][1])
        assert x.dtype == np.uint8 and y.dtype == np.int64
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json", "test_images.npy", "test_labels.npy", "train_images.npy", "train_labels.npy",
        "val_images.npy", "val_labels.npy"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


def test_load_split_memory_maps_images_copy_on_write(tmp_path, small_arrays, small_raw, small_cfg):
    out = tmp_path / "processed"
    write_processed(small_raw, small_cfg, out)
    images, labels = load_split(out, "val")
    assert isinstance(images, np.memmap) and images.mode == "c" and not isinstance(labels, np.memmap)
    np.testing.assert_array_equal(images, small_arrays["val"][0])
    images[0] = 0  # writable in this process only
    np.testing.assert_array_equal(load_split(out, "val")[0], small_arrays["val"][0])


def test_chunked_writing_gives_the_one_shot_statistics_and_hash(tmp_path, monkeypatch, small_arrays,
                                                               small_raw, small_cfg):
    monkeypatch.setattr(processed, "CHUNK_BYTES", 3 * 8 * 8 * 3)  # three images per chunk, a short last chunk
    meta = write_processed(small_raw, small_cfg, tmp_path / "processed")
    x_train = small_arrays["train"][0] / 255.0
    assert meta["mean"] == x_train.mean(axis=(0, 1, 2)).round(6).tolist()
    assert meta["std"] == x_train.std(axis=(0, 1, 2)).round(6).tolist()
    one_shot = hashlib.sha256()
    for split in SPLITS:
        x, y = small_arrays[split]
        one_shot.update(x.tobytes())
        one_shot.update(y.tobytes())
    assert meta["sha256"] == one_shot.hexdigest()


def test_content_hash_is_stable_and_sensitive(tmp_path, small_arrays, small_raw, small_cfg):
    first = write_processed(small_raw, small_cfg, tmp_path / "one")["sha256"]
    again = write_processed(small_raw, small_cfg, tmp_path / "one")["sha256"]  # overwrite in place
    other_dir = write_processed(small_raw, small_cfg, tmp_path / "two")["sha256"]
    assert first == again == other_dir
    x, y = small_arrays["test"]
    changed = x.copy()
    changed[0, 0, 0, 0] ^= 1
    small_raw.splits["test"] = in_memory(changed, y)
    assert write_processed(small_raw, small_cfg, tmp_path / "three")["sha256"] != first


def test_processed_store_and_normalize_load_without_torch():
    """The conversion and benchmark stages read the store and normalise without the training code."""
    code = ("import sys, lib.processed; "
            "print(sorted(m for m in ('torch', 'lib.loader', 'lib.sources') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_load_meta_missing_raises(tmp_path):
    with pytest.raises(UserError, match="prepare_data"):
        load_meta(tmp_path)


def test_load_split_of_an_old_or_missing_folder_raises(tmp_path):
    np.savez(tmp_path / "train.npz", images=np.zeros((2, 8, 8, 1), np.uint8), labels=np.zeros(2))
    with pytest.raises(UserError, match=r"train_images\.npy not found.*prepare_data"):
        load_split(tmp_path, "train")


# ---------------------------------------------------------------- torch pipeline

def test_image_dataset_gives_normalised_chw_floats():
    rng = np.random.default_rng(10)
    images = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 1])
    meta = {"mean": [0.1, 0.5, 0.9], "std": [0.2, 0.25, 0.5]}
    ds = ImageDataset(images, labels, meta)
    assert len(ds) == 5
    x, y = ds[3]
    assert x.dtype == torch.float32 and x.shape == (3, 6, 6)
    expected = (images[3].transpose(2, 0, 1) / 255.0 - np.array(meta["mean"])[:, None, None]) \
        / np.array(meta["std"])[:, None, None]
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)
    assert int(y) == 1


def test_make_loader_batches_and_is_deterministic_without_augment():
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, (7, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(7) % 2
    meta = {"mean": [0.5], "std": [0.3]}
    loader = make_loader(images, labels, meta, batch_size=3, augment=False)
    first = list(loader)
    second = list(loader)
    assert [len(b[1]) for b in first] == [3, 3, 1]
    xb, yb = first[0]
    assert xb.shape == (3, 1, 8, 8) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    np.testing.assert_allclose(xb[0, 0].numpy(), (images[0, ..., 0] / 255.0 - 0.5) / 0.3, atol=1e-5)
    for (xa, ya), (xc, yc) in zip(first, second):
        assert torch.equal(xa, xc) and torch.equal(ya, yc)


def test_make_loader_shuffle_is_seeded():
    images = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2, 1)
    labels = np.arange(10)
    meta = {"mean": [0.0], "std": [1.0]}
    order = lambda seed: torch.cat([y for _, y in make_loader(images, labels, meta, 4, shuffle=True,
                                                              seed=seed)]).tolist()
    assert order(5) == order(5)
    assert sorted(order(5)) == list(range(10))


def test_augment_changes_images_but_keeps_shape():
    rng = np.random.default_rng(12)
    images = rng.integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
    labels = np.zeros(4, dtype=np.int64)
    meta = {"mean": [0.5], "std": [0.3]}
    torch.manual_seed(0)
    plain, _ = next(iter(make_loader(images, labels, meta, batch_size=4)))
    augmented, _ = next(iter(make_loader(images, labels, meta, batch_size=4, augment=True)))
    assert augmented.shape == plain.shape == (4, 1, 16, 16)
    assert any(not torch.equal(augmented[i], plain[i]) for i in range(4))


def test_memory_mapped_split_feeds_the_loader_and_predict_path_without_warnings(tmp_path, small_arrays,
                                                                              small_raw, small_cfg):
    out = tmp_path / "processed"
    meta = write_processed(small_raw, small_cfg, out)
    images, labels = load_split(out, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "The given NumPy array is not writable"
        xb, yb = next(iter(make_loader(images, labels, meta, batch_size=8)))
    expected = normalize(small_arrays["train"][0], meta).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(xb.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(normalize(images[2:5], meta), expected[2:5].transpose(0, 2, 3, 1), atol=1e-6)
    assert torch.equal(yb, torch.from_numpy(small_arrays["train"][1]))
