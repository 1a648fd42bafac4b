"""lib.data: every source → RawDataset, the processed format round trip, and the torch data pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import RAW_DIR, make_imagefolder, save_png
from lib.config import DatasetConfig
from lib.data import (ImageDataset, RawDataset, load_meta, load_source, load_split, make_loader,
                      write_processed)


def folder_cfg(root, image_size=12, test_fraction=0.2) -> DatasetConfig:
    return DatasetConfig(source="imagefolder", root=str(root), image_size=image_size,
                         test_fraction=test_fraction)


def arrays_cfg(root, image_size=8, test_fraction=0.25) -> DatasetConfig:
    return DatasetConfig(source="arrays", root=str(root), image_size=image_size,
                         test_fraction=test_fraction)


def assert_labels_match_intensity(x: np.ndarray, y: np.ndarray) -> None:
    """With `class_image` data, class 0 images are dark and class 1 images bright."""
    means = x.reshape(len(x), -1).mean(axis=1)
    assert (means[y == 0] < 110).all() and (means[y == 1] > 145).all()


# ---------------------------------------------------------------- imagefolder

def test_imagefolder_split_first_layout(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 4, "val": 2, "test": 3}, classes=("cat", "ant"))
    raw = load_source(folder_cfg(root), seed=0)
    assert raw.classes == ["ant", "cat"]  # sorted folder names
    assert raw.test_split == "provided by the source"
    assert set(raw.splits) == {"train", "val", "test"}
    for split, n in {"train": 4, "val": 2, "test": 3}.items():
        x, y = raw.splits[split]
        assert x.shape == (2 * n, 12, 12, 1) and x.dtype == np.uint8
        assert y.dtype == np.int64 and np.bincount(y).tolist() == [n, n]
        assert_labels_match_intensity(x, y)


def test_imagefolder_pixels_are_read_unchanged(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    raw = load_source(folder_cfg(root), seed=0)
    expected = np.asarray(Image.open(root / "train" / "ant" / "img00.png"))
    np.testing.assert_array_equal(raw.splits["train"][0][0, ..., 0], expected)


def test_imagefolder_class_first_layout(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 5, "val": 2}, classes=("zebra", "yak"),
                            layout="class")
    raw = load_source(folder_cfg(root, test_fraction=0.2), seed=0)
    assert raw.classes == ["yak", "zebra"]
    assert raw.splits["val"][0].shape == (4, 12, 12, 1)
    assert len(raw.splits["train"][1]) + len(raw.splits["test"][1]) == 10
    for split in ("train", "val", "test"):
        assert_labels_match_intensity(*raw.splits[split])


def test_grayscale_png_gives_one_channel_rgb_gives_three(tmp_path):
    gray = make_imagefolder(tmp_path / "gray", {"train": 2, "val": 1, "test": 1}, rgb=False)
    rgb = make_imagefolder(tmp_path / "rgb", {"train": 2, "val": 1, "test": 1}, rgb=True)
    assert load_source(folder_cfg(gray), 0).splits["train"][0].shape[-1] == 1
    raw_rgb = load_source(folder_cfg(rgb), 0)
    assert all(x.shape[-1] == 3 for x, _ in raw_rgb.splits.values())
    expected = np.asarray(Image.open(rgb / "val" / "cat" / "img00.png"))
    np.testing.assert_array_equal(raw_rgb.splits["val"][0][1], expected)


def test_images_are_resized_to_image_size(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1}, size=20)
    raw = load_source(folder_cfg(root, image_size=8), 0)
    for x, _ in raw.splits.values():
        assert x.shape[1:] == (8, 8, 1)


def test_mixed_sizes_are_all_resized(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1}, size=16)
    save_png(root / "train" / "ant" / "big.png", np.full((30, 24), 10, np.uint8))
    raw = load_source(folder_cfg(root, image_size=10), 0)
    assert raw.splits["train"][0].shape == (5, 10, 10, 1)


def test_missing_test_split_is_carved_stratified(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 10, "val": 2}, size=8)
    raw = load_source(folder_cfg(root, image_size=8, test_fraction=0.2), seed=3)
    x_train, y_train = raw.splits["train"]
    x_test, y_test = raw.splits["test"]
    assert len(y_train) == 16 and len(y_test) == 4
    assert np.bincount(y_test).tolist() == [2, 2]
    assert np.bincount(y_train).tolist() == [8, 8]
    assert "carved" in raw.test_split and "20%" in raw.test_split and "seed 3" in raw.test_split
    assert_labels_match_intensity(x_test, y_test)
    # no image is in both train and test
    train_rows = {img.tobytes() for img in x_train}
    assert not any(img.tobytes() in train_rows for img in x_test)


def test_carved_test_split_is_deterministic_for_a_seed(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 10, "val": 2}, size=8)
    cfg = folder_cfg(root, image_size=8, test_fraction=0.2)
    first, second = load_source(cfg, seed=7), load_source(cfg, seed=7)
    for split in ("train", "test"):
        np.testing.assert_array_equal(first.splits[split][0], second.splits[split][0])
        np.testing.assert_array_equal(first.splits[split][1], second.splits[split][1])


def test_corrupt_image_raises_value_error_naming_file(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    (root / "train" / "cat" / "x.png").write_bytes(b"this is not a png at all \x00\x01\x02")
    with pytest.raises(ValueError, match=r"x\.png"):
        load_source(folder_cfg(root), 0)


def test_truncated_png_raises_value_error(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    good = (root / "val" / "ant" / "img00.png").read_bytes()
    (root / "val" / "ant" / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cut\.png"):
        load_source(folder_cfg(root), 0)


def test_class_missing_from_val_raises(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1})
    for f in (root / "val" / "cat").iterdir():
        f.unlink()
    (root / "val" / "cat").rmdir()
    with pytest.raises(ValueError, match="val") as err:
        load_source(folder_cfg(root), 0)
    assert "cat" in str(err.value)


def test_extra_class_in_test_raises(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    save_png(root / "test" / "dog" / "a.png", np.zeros((12, 12), np.uint8))
    with pytest.raises(ValueError, match="dog"):
        load_source(folder_cfg(root), 0)


def test_empty_class_folder_raises(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    for split in ("train", "val", "test"):
        (root / split / "bee").mkdir()
    (root / "train" / "bee" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="bee"):
        load_source(folder_cfg(root), 0)


def test_tree_fitting_neither_layout_raises(tmp_path):
    root = tmp_path / "d"
    save_png(root / "cat" / "a.png", np.zeros((8, 8), np.uint8))
    save_png(root / "ant" / "b.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="neither"):
        load_source(folder_cfg(root), 0)


def test_empty_root_raises(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError):
        load_source(folder_cfg(tmp_path / "d"), 0)


@pytest.mark.parametrize("layout", ["split", "class"])
def test_missing_val_split_raises(tmp_path, layout):
    root = make_imagefolder(tmp_path / "d", {"train": 3}, layout=layout)
    with pytest.raises(ValueError, match="val"):
        load_source(folder_cfg(root), 0)


def test_sixteen_bit_grayscale_png_keeps_its_contrast(tmp_path):
    """16-bit PNGs (common for X-rays) must be scaled to 8 bit, not clipped at 255."""
    root = make_imagefolder(tmp_path / "d", {"train": 2, "val": 1, "test": 1}, size=8)
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)  # 0 … 63 000
    Image.fromarray(ramp).save(root / "train" / "ant" / "wide.png")
    with Image.open(root / "train" / "ant" / "wide.png") as img:
        assert img.mode.startswith("I")  # really a 16-bit file
    raw = load_source(folder_cfg(root, image_size=8), 0)
    x, _ = raw.splits["train"]
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


def random_split(rng, n, shape=(8, 8, 1), k=2):
    y = np.arange(n) % k
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), y


def test_arrays_nhwc_uint8(tmp_path):
    rng = np.random.default_rng(0)
    splits = {"train": random_split(rng, 8), "val": random_split(rng, 4), "test": random_split(rng, 4)}
    raw = load_source(arrays_cfg(write_arrays(tmp_path / "a", splits)), 0)
    assert raw.classes == ["0", "1"] and raw.test_split == "provided by the source"
    for name, (x, y) in splits.items():
        np.testing.assert_array_equal(raw.splits[name][0], x)
        np.testing.assert_array_equal(raw.splits[name][1], y)
        assert raw.splits[name][1].dtype == np.int64


def test_arrays_nchw_float_in_unit_range(tmp_path):
    rng = np.random.default_rng(1)
    nhwc = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    nchw_float = nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    y = np.arange(6) % 2
    raw = load_source(arrays_cfg(write_arrays(tmp_path / "a", {
        "train": (nchw_float, y), "val": (nchw_float[:2], y[:2]), "test": (nchw_float[:2], y[:2])})), 0)
    assert raw.splits["train"][0].shape == (6, 8, 8, 3)
    assert raw.splits["train"][0].dtype == np.uint8
    np.testing.assert_array_equal(raw.splits["train"][0], nhwc)


def test_arrays_grayscale_nhw(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    y = np.arange(6) % 2
    raw = load_source(arrays_cfg(write_arrays(tmp_path / "a", {
        "train": (x, y), "val": (x[:2], y[:2]), "test": (x[:2], y[:2])})), 0)
    assert raw.splits["train"][0].shape == (6, 8, 8, 1)
    np.testing.assert_array_equal(raw.splits["train"][0][..., 0], x)


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
    np.testing.assert_array_equal(raw.splits["train"][1], y)
    assert raw.splits["train"][1].dtype == np.int64
    assert raw.classes == ["0", "1", "2"]


def test_arrays_wrong_image_shape_raises(tmp_path):
    x = np.zeros((4, 5, 5, 7), np.uint8)
    y = np.array([0, 1, 0, 1])
    root = write_arrays(tmp_path / "a", {"train": (x, y), "val": (x, y)})
    with pytest.raises(ValueError, match="X_train"):
        load_source(arrays_cfg(root), 0)


def test_arrays_mismatched_lengths_raise(tmp_path):
    rng = np.random.default_rng(4)
    x, y = random_split(rng, 6)
    root = write_arrays(tmp_path / "a", {"train": (x, y[:5]), "val": (x, y)})
    with pytest.raises(ValueError, match="6 images.*5 labels"):
        load_source(arrays_cfg(root), 0)


def test_arrays_missing_val_raises(tmp_path):
    rng = np.random.default_rng(5)
    root = write_arrays(tmp_path / "a", {"train": random_split(rng, 8)})
    with pytest.raises(ValueError, match="X_val"):
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
    with pytest.raises(ValueError, match="labels must lie"):
        load_source(arrays_cfg(root, test_fraction=0.34), 0)


def test_arrays_are_resized_and_test_carved(tmp_path):
    rng = np.random.default_rng(8)
    splits = {"train": random_split(rng, 8, shape=(16, 16, 3)), "val": random_split(rng, 4, shape=(16, 16, 3))}
    raw = load_source(arrays_cfg(write_arrays(tmp_path / "a", splits), image_size=8, test_fraction=0.25), 0)
    assert {name: x.shape for name, (x, _) in raw.splits.items()} == {
        "train": (6, 8, 8, 3), "val": (4, 8, 8, 3), "test": (2, 8, 8, 3)}
    assert "carved" in raw.test_split


# ---------------------------------------------------------------- medmnist

@pytest.fixture(scope="module")
def pneumonia():
    if not (RAW_DIR / "pneumoniamnist.npz").is_file():
        pytest.skip("data/raw/pneumoniamnist.npz is not present")
    cfg = DatasetConfig(source="medmnist", root=str(RAW_DIR), image_size=28, test_fraction=0.15,
                        name="pneumoniamnist")
    return load_source(cfg, 42)


def test_medmnist_loads_shipped_file(pneumonia):
    sizes = {name: len(y) for name, (_, y) in pneumonia.splits.items()}
    assert sizes == {"train": 4708, "val": 524, "test": 624}
    assert pneumonia.classes == ["normal", "pneumonia"]
    assert pneumonia.test_split == "provided by the source"
    x, y = pneumonia.splits["train"]
    assert x.shape[1:] == (28, 28, 1) and x.dtype == np.uint8
    assert set(np.unique(y)) == {0, 1}


def test_medmnist_unknown_name_lists_names():
    cfg = DatasetConfig(source="medmnist", root=str(RAW_DIR), image_size=28, test_fraction=0.15,
                        name="notamnist")
    with pytest.raises(ValueError, match="notamnist") as err:
        load_source(cfg, 0)
    assert "pneumoniamnist" in str(err.value) and "pathmnist" in str(err.value)


# ---------------------------------------------------------------- processed format

@pytest.fixture
def small_raw() -> RawDataset:
    rng = np.random.default_rng(9)
    splits = {"train": random_split(rng, 8, shape=(8, 8, 3)), "val": random_split(rng, 4, shape=(8, 8, 3)),
              "test": random_split(rng, 6, shape=(8, 8, 3))}
    return RawDataset(splits, ["neg", "pos"], "provided by the source")


@pytest.fixture
def small_cfg(tmp_path) -> DatasetConfig:
    return arrays_cfg(tmp_path, image_size=8)


def test_write_processed_round_trip(tmp_path, small_raw, small_cfg):
    out = tmp_path / "processed"
    meta = write_processed(small_raw, small_cfg, out)
    assert load_meta(out) == meta
    assert meta["classes"] == ["neg", "pos"]
    assert meta["channels"] == 3 and meta["image_size"] == 8
    assert meta["counts"] == {"train": {"neg": 4, "pos": 4}, "val": {"neg": 2, "pos": 2},
                              "test": {"neg": 3, "pos": 3}}
    x_train = small_raw.splits["train"][0] / 255.0
    np.testing.assert_allclose(meta["mean"], x_train.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(meta["std"], x_train.std(axis=(0, 1, 2)), atol=1e-6)
    assert len(meta["sha256"]) == 64 and int(meta["sha256"], 16) >= 0
    for split in ("train", "val", "test"):
        x, y = load_split(out, split)
        np.testing.assert_array_equal(x, small_raw.splits[split][0])
        np.testing.assert_array_equal(y, small_raw.splits[split][1])
        assert x.dtype == np.uint8 and y.dtype == np.int64
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.npz", "train.npz", "val.npz"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


def test_content_hash_is_stable_and_sensitive(tmp_path, small_raw, small_cfg):
    first = write_processed(small_raw, small_cfg, tmp_path / "one")["sha256"]
    again = write_processed(small_raw, small_cfg, tmp_path / "one")["sha256"]  # overwrite in place
    other_dir = write_processed(small_raw, small_cfg, tmp_path / "two")["sha256"]
    assert first == again == other_dir
    x, y = small_raw.splits["test"]
    changed = x.copy()
    changed[0, 0, 0, 0] ^= 1
    small_raw.splits["test"] = (changed, y)
    assert write_processed(small_raw, small_cfg, tmp_path / "three")["sha256"] != first


def test_load_meta_missing_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_meta(tmp_path)


# ---------------------------------------------------------------- torch pipeline

def test_image_dataset_gives_normalised_chw_floats():
    rng = np.random.default_rng(10)
    images = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 1])
    meta = {"mean": [0.1, 0.5, 0.9], "std": [0.2, 0.25, 0.5]}
    ds = ImageDataset(images, labels, meta, augment=False)
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
    meta = {"mean": [0.5], "std": [0.3]}
    torch.manual_seed(0)
    plain = ImageDataset(images, np.zeros(4, dtype=np.int64), meta, augment=False)
    augmented = ImageDataset(images, np.zeros(4, dtype=np.int64), meta, augment=True)
    assert augmented[0][0].shape == plain[0][0].shape == (1, 16, 16)
    assert any(not torch.equal(augmented[i][0], plain[i][0]) for i in range(4))
