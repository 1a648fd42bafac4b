"""Quantization-aware training: the fake-quant model trains, observes only in training, and exports to an
ONNX model that ONNX Runtime runs with integer kernels and that reproduces the fake-quant model."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from lib import qat
from lib.models import build
from lib.pruning import prune_channels
from lib.runtimes import predict

META = {"classes": ["a", "b"], "mean": [0.5], "std": [0.25], "channels": 1, "image_size": 16}


@pytest.fixture(scope="module", params=[False, True], ids=["per_tensor", "per_channel"])
def trained(request):
    """A pruned MobileNetV2 student with fake quantization, after a few SGD steps."""
    torch.manual_seed(0)
    example = torch.zeros(1, 1, 16, 16)
    student = prune_channels(build("mobilenetv2", 2, 1, 16, 0.5), example, 0.5, "l1", 1, 8)
    model = qat.prepare(student, example, per_channel=request.param)
    images, labels = torch.randn(16, 1, 16, 16), torch.randint(0, 2, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), example


def images(n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 1), dtype=np.uint8)


def scales(model) -> list[float]:
    return [float(m.scale.sum()) for m in model.modules() if isinstance(m, torch.ao.quantization.FakeQuantize)]


def test_fake_quant_model_trains_and_learns_ranges(trained):
    model, _ = trained
    assert sum(isinstance(m, torch.ao.quantization.FakeQuantize) for m in model.modules()) > 10
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # folded before QAT
    assert all(s != 1.0 for s in scales(model))  # every observer has seen data
    assert np.isfinite(model(torch.randn(2, 1, 16, 16)).detach().numpy()).all()


def test_observers_move_only_in_training(trained):
    model, _ = trained
    before = scales(model)
    with torch.no_grad():
        model.eval()(torch.randn(8, 1, 16, 16) * 10)
        assert scales(model) == before
        model.train()(torch.randn(8, 1, 16, 16) * 10)
        assert scales(model) != before
    model.eval()


def test_int8_onnx_runs_integer_kernels_and_matches_fake_quant(trained, tmp_path):
    import onnxruntime as ort

    model, example = trained
    path = tmp_path / "qat.onnx"
    qat.export_onnx(model, example, path, opset=18)
    graph = onnx.load(path).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert sum(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer) >= ops["Conv"]  # int8 weights
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "runtime.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fused = Counter(n.op_type for n in onnx.load(tmp_path / "runtime.onnx").graph.node)
    assert fused["QLinearConv"] == ops["Conv"] and fused["Conv"] == 0
    reference, int8 = predict(model, images(), META), predict(path, images(), META)
    assert (reference.argmax(1) == int8.argmax(1)).mean() == 1.0
    np.testing.assert_allclose(int8, reference, atol=0.02)


def test_float_copy_exports_without_quantization(trained, tmp_path):
    model, example = trained
    path = tmp_path / "float.onnx"
    qat.export_onnx(qat.float_copy(model), example, path, opset=18)
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in onnx.load(path).graph.node}
    assert predict(path, images(), META).shape == (32, 2)
