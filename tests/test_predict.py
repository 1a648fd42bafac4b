"""lib.predict: every artifact format on new image files, table and JSON output, and the user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, built_once, class_image, save_png
from lib.errors import UserError
from lib.export import export_onnx, to_tflite
from lib.images import read_image
from lib.models import ModelSpec, build, save_checkpoint
from lib.predict import main, read_images
from lib.runtimes import predict

SPEC = ModelSpec("mobilenetv2", num_classes=3, in_channels=1, image_size=28)
META = {"classes": ["ant", "bee", "cat"], "image_size": 28, "channels": 1, "mean": [0.5], "std": [0.25]}


def _write_models(out: Path) -> None:
    """One tiny network saved as a checkpoint, exported to ONNX and converted to TFLite."""
    out.mkdir(parents=True)
    torch.manual_seed(0)
    model = build(SPEC.arch, SPEC.num_classes, SPEC.in_channels, SPEC.image_size).eval()
    save_checkpoint(model, SPEC, out / "m.pt")
    export_onnx(model, torch.zeros(1, 1, 28, 28), out / "m.onnx", opset=18)
    to_tflite(out / "m.onnx", out / "m.tflite")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """`_write_models`, once for every worker (slow); the tests only read it."""
    return built_once(tmp_path_factory, "predict-models", _write_models)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Four grayscale PNGs at 12 px (one in a subfolder) and a file that is not an image."""
    root = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    for name, label in (("b.png", 0), ("a.png", 1), ("sub/c.png", 1), ("d.png", 0)):
        save_png(root / name, class_image(rng, label, 12, rgb=False))
    (root / "notes.txt").write_text("not an image")
    return root


def write_meta(tmp_path, **changes) -> str:
    path = tmp_path / "meta.json"
    path.write_text(json.dumps({**META, **changes}))
    return str(path)


def predict_json(capsys, *args) -> list[dict]:
    main([*map(str, args), "--json"])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("suffix", [".pt", ".onnx", ".tflite"])
def test_every_format_predicts_what_training_preprocessing_gives(suffix, models_dir, scans, tmp_path, capsys):
    out = predict_json(capsys, models_dir / f"m{suffix}", scans, "--meta", write_meta(tmp_path), "--top", "3")
    assert [row["file"] for row in out] == ["a.png", "b.png", "d.png", "sub/c.png"]
    # the imagefolder source keeps channel 0 of a gray set: the reference preprocessing
    images = np.stack([read_image(scans / row["file"], 28)[..., :1] for row in out])
    expected = predict(models_dir / "m.pt", images, META)
    got = np.array([[p for _, p in sorted((t["class"], t["probability"]) for t in row["top"])] for row in out])
    np.testing.assert_allclose(got, expected, atol=1e-3 if suffix == ".tflite" else 1e-5)


def test_json_lists_top_k_classes_best_first(models_dir, scans, tmp_path, capsys):
    out = predict_json(capsys, models_dir / "m.pt", scans / "a.png", "--meta", write_meta(tmp_path), "--top", "2")
    assert len(out) == 1
    row = out[0]
    assert set(row) == {"file", "predicted", "probability", "top"}
    assert row["file"] == str(scans / "a.png")
    assert [t["class"] for t in row["top"]][0] == row["predicted"] and len(row["top"]) == 2
    assert row["top"][0]["probability"] == row["probability"] >= row["top"][1]["probability"]
    assert set(t["class"] for t in row["top"]) <= set(META["classes"])


def test_table_has_a_row_per_image_and_rank(models_dir, scans, tmp_path, capsys):
    main([str(models_dir / "m.onnx"), str(scans), "--meta", write_meta(tmp_path), "--top", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["file", "class", "probability"]
    assert [line.split()[0] for line in lines[1:]] == ["a.png"] * 2 + ["b.png"] * 2 + ["d.png"] * 2 + ["sub/c.png"] * 2
    probs = [float(line.split()[2]) for line in lines[1:]]
    assert all(0.0 <= p <= 1.0 for p in probs) and probs[0] >= probs[1]


def test_gray_model_reads_colour_images_as_luma_and_gray_ones_unchanged(tmp_path):
    gray = save_png(tmp_path / "gray.png", np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    colour = np.zeros((8, 8, 3), dtype=np.uint8)
    colour[..., 0] = 200
    save_png(tmp_path / "red.png", colour)
    images = read_images([gray, tmp_path / "red.png"], 8, channels=1)
    assert images.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(images[0], read_image(gray, 8)[..., :1])
    assert (images[1] == round(200 * 0.299)).all()


def test_rgb_model_reads_three_channels(tmp_path):
    path = save_png(tmp_path / "rgb.png", np.full((5, 7, 3), (10, 20, 30), dtype=np.uint8))
    images = read_images([path], 8, channels=3)
    assert images.shape == (1, 8, 8, 3)
    assert images[0, 0, 0].tolist() == [10, 20, 30]


def test_corrupt_image_error_names_the_file(models_dir, tmp_path):
    bad = tmp_path / "scans" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png"):
        main([str(models_dir / "m.pt"), str(bad.parent), "--meta", write_meta(tmp_path)])


def test_folder_without_images_is_an_error(models_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match="holds no images"):
        main([str(models_dir / "m.pt"), str(tmp_path / "empty"), "--meta", write_meta(tmp_path)])


@pytest.mark.parametrize("suffix, changes, message", [
    (".pt", {"channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}, "channels: model 1, meta.json 3"),
    (".onnx", {"image_size": 16}, "image size: model 28, meta.json 16"),
    (".tflite", {"channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}, "channels: model 1, meta.json 3"),
    (".onnx", {"classes": ["ant", "bee"]}, "classes: model 3, meta.json 2"),
])
def test_model_that_does_not_fit_meta_says_what_each_expects(suffix, changes, message, models_dir, scans,
                                                              tmp_path):
    with pytest.raises(UserError, match=message):
        main([str(models_dir / f"m{suffix}"), str(scans), "--meta", write_meta(tmp_path, **changes)])


def test_missing_meta_points_to_prepare_data(models_dir, scans, tmp_path):
    with pytest.raises(UserError, match="prepare_data.*--meta"):
        main([str(models_dir / "m.pt"), str(scans), "--meta", str(tmp_path / "nowhere.json")])


def test_top_k_beyond_the_classes_is_an_error(models_dir, scans, tmp_path):
    with pytest.raises(UserError, match="--top: got 4; expected 1 to 3"):
        main([str(models_dir / "m.pt"), str(scans), "--meta", write_meta(tmp_path), "--top", "4"])


def test_unknown_model_suffix_exits_2_with_one_line(scans, tmp_path):
    model = tmp_path / "model.h5"
    model.write_bytes(b"weights")
    result = subprocess.run([sys.executable, "-m", "lib.predict", str(model), str(scans),
                             "--meta", write_meta(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: MODEL: {model} has unknown suffix '.h5'; expected one of .pt, .onnx, .tflite"]
