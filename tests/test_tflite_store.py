"""A per-channel INT8 TFLite file stores each repeated quantization vector once, and is the same model."""

from __future__ import annotations

import numpy as np
import torch
from tensorflow.lite.tools import flatbuffer_utils
from torch import nn

from lib.export import export_onnx, quantize_int8
from lib.runtimes import predict

SIZE, CHANNELS = 16, 16
META = {"classes": ["a", "b"], "mean": [0.5], "std": [0.25], "channels": 1, "image_size": SIZE}


def _per_channel_int8(tmp_path) -> bytes:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, CHANNELS, 3, padding=1), nn.BatchNorm2d(CHANNELS), nn.ReLU(),
                        nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1), nn.BatchNorm2d(CHANNELS), nn.ReLU(),
                        nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS, 2)).eval()
    export_onnx(net, torch.zeros(1, 1, SIZE, SIZE), tmp_path / "m.onnx", opset=18)
    calibration = np.random.default_rng(0).random((16, SIZE, SIZE, 1), dtype=np.float32)
    quantize_int8(tmp_path / "m.onnx", calibration, META["mean"], META["std"], tmp_path / "int8.tflite",
                  int8_io=False, per_channel=True)
    return (tmp_path / "int8.tflite").read_bytes()


def test_per_channel_zero_points_are_stored_once_and_the_model_answers_the_same(tmp_path):
    stored = _per_channel_int8(tmp_path)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(stored))
    zero_points = [t.quantization.zeroPoint for t in model.subgraphs[0].tensors
                   if t.quantization is not None and t.quantization.zeroPoint is not None
                   and len(t.quantization.zeroPoint) == CHANNELS]
    # three convolutions, each with an int8 filter and an int32 bias quantized per output channel
    assert len(zero_points) >= 6 and not np.any(np.concatenate(zero_points))

    plain = tmp_path / "plain.tflite"  # what TFLite's own serializer writes: a vector wherever it is used
    plain.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    assert plain.stat().st_size - len(stored) >= (len(zero_points) - 1) * CHANNELS * 8

    images = np.random.default_rng(1).integers(0, 256, (32, SIZE, SIZE, 1), dtype=np.uint8)
    np.testing.assert_array_equal(predict(tmp_path / "int8.tflite", images, META), predict(plain, images, META))
