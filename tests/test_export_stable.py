"""ONNX export is byte-stable: the same weights give the same file, so DVC reruns nothing downstream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lib.export import export_onnx
from lib.runtimes import predict

META = {"classes": ["a", "b"], "mean": [0.5], "std": [0.25], "channels": 1, "image_size": 8}


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2)).eval()


@pytest.fixture(scope="module")
def exported(net, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(net, torch.zeros(1, 1, 8, 8), path, opset=18)
    return path


def test_export_records_no_path_of_the_python_install(exported):
    content = exported.read_bytes()
    assert str(Path(torch.__file__).parent).encode() not in content
    assert b"stack_trace" not in content


def test_same_weights_export_to_identical_bytes(net, exported, tmp_path):
    again = tmp_path / "again.onnx"
    export_onnx(net, torch.zeros(1, 1, 8, 8), again, opset=18)
    assert again.read_bytes() == exported.read_bytes()


def test_stable_export_still_matches_torch(net, exported):
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_allclose(predict(exported, images, META), predict(net, images, META), atol=1e-6)
