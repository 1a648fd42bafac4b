"""lib.explain: the Grad-CAM target layer rule, heat maps, the stratified sample and the figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lib.config import Params, from_dict
from lib.explain import CELL_INCHES, DPI, Explanation, gradcam, plot_grid, stratified_sample, target_layer
from lib.models import build
from lib.runtimes import predict
from lib.task import SingleLabel

META = {"classes": ["normal", "pneumonia"], "image_size": 28, "channels": 1, "mean": [0.5], "std": [0.25]}
TWO = SingleLabel(META["classes"])
THREE = SingleLabel(["a", "b", "c"])


def tiny(arch: str, size: int = 28) -> nn.Module:
    torch.manual_seed(0)
    return build(arch, num_classes=2, in_channels=1, image_size=size).eval()


def output_shape(model: nn.Module, layer: nn.Module, size: int) -> torch.Size:
    shapes = []
    hook = layer.register_forward_hook(lambda _, __, out: shapes.append(out.shape))
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    hook.remove()
    return shapes[0]


@pytest.mark.parametrize("arch, expected", [
    ("resnet18", lambda m: m.layer4[-1].conv2),
    ("mobilenetv2", lambda m: m.features[-1][0]),
])
def test_target_layer_is_the_last_spatial_convolution(arch, expected):
    model = tiny(arch)
    layer = target_layer(model, torch.zeros(1, 1, 28, 28))
    assert isinstance(layer, nn.Conv2d) and layer is expected(model)
    assert np.prod(output_shape(model, layer, 28)[-2:]) > 1


def test_target_layer_skips_convolutions_with_a_1x1_output():
    model = tiny("mobilenetv2", size=16)  # strides 2⁴: the last blocks see a 1×1 map
    layer = target_layer(model, torch.zeros(1, 1, 16, 16))
    assert layer is not model.features[-1][0]
    assert output_shape(model, layer, 16)[-2:] == (2, 2)


def test_model_without_a_spatial_convolution_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, kernel_size=3), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no convolution with a spatial output"):
        target_layer(model, torch.zeros(1, 1, 3, 3))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv2"])
def test_heatmaps_lie_in_unit_range_at_image_size_for_the_predicted_class(arch):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    model = tiny(arch)
    exp = gradcam(model, images, META, torch.device("cpu"))
    assert exp.heatmaps.shape == (3, 28, 28)
    assert exp.heatmaps.min() >= 0.0 and exp.heatmaps.max() <= 1.0
    probs = predict(model, images, META)
    np.testing.assert_array_equal(exp.predicted, probs.argmax(axis=1))
    np.testing.assert_allclose(exp.probability, probs.max(axis=1), atol=1e-6)


def test_sample_is_seeded_and_shares_classes_evenly():
    labels = np.array([0] * 90 + [1] * 10)
    chosen = stratified_sample(TWO, labels, 8, seed=42)
    assert np.bincount(labels[chosen]).tolist() == [4, 4]
    assert len(set(chosen.tolist())) == 8
    assert labels[chosen].tolist() == sorted(labels[chosen].tolist())
    np.testing.assert_array_equal(chosen, stratified_sample(TWO, labels, 8, seed=42))
    assert set(chosen.tolist()) != set(stratified_sample(TWO, labels, 8, seed=1).tolist())


def test_sample_takes_the_rest_from_classes_that_have_them():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    assert np.bincount(labels[stratified_sample(THREE, labels, 9, seed=0)]).tolist() == [4, 2, 3]
    assert len(stratified_sample(THREE, labels, 64, seed=0)) == len(labels)


def test_figure_is_a_png_grid_of_images_by_models(tmp_path):
    rows = 3
    images = np.random.default_rng(0).integers(0, 256, (rows, 28, 28, 1), dtype=np.uint8)
    exp = Explanation(np.random.default_rng(1).random((rows, 28, 28), dtype=np.float32),
                      np.array([0, 1, 1]), np.array([0.9, 0.6, 0.75]))
    path = tmp_path / "gradcam.png"
    plot_grid(images, np.array([0, 1, 0]), {"teacher": exp, "student": exp, "pruned": exp},
              TWO, path)
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.size == (4 * CELL_INCHES * DPI, rows * CELL_INCHES * DPI)


@pytest.mark.parametrize("samples", [0, 65])
def test_explain_samples_out_of_range_is_refused(base_params, samples):
    with pytest.raises(ValueError, match=r"explain\.samples: got .*\[1, 64\]"):
        from_dict(Params, {**base_params, "explain": {"samples": samples}})
