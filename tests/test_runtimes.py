"""lib.runtimes: int8 (de)quantisation, `predict` on a torch module, and `load_runner` errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax
from torch import nn

from lib.errors import UserError
from lib.models import ModelSpec, build, save_checkpoint
from lib.runtimes import dequantize, load_runner, predict, quantize

INT8 = {"dtype": np.int8, "quantization": (0.1, 3)}


def test_int8_round_trip_within_half_a_step():
    x = np.linspace(-13.0, 12.3, 101, dtype=np.float32)  # inside (−128 − 3)·0.1 … (127 − 3)·0.1
    q = quantize(x, INT8)
    assert q.dtype == np.int8
    back = dequantize(q, INT8)
    assert back.dtype == np.float32
    assert np.abs(back - x).max() <= 0.1 / 2 + 1e-6


def test_int8_uses_scale_and_zero_point():
    q = quantize(np.array([0.0, 0.1, -0.3, 1.0], dtype=np.float32), INT8)
    assert q.tolist() == [3, 4, 0, 13]
    np.testing.assert_allclose(dequantize(np.array([3, 13, -128], dtype=np.int8), INT8), [0.0, 1.0, -13.1],
                               atol=1e-6)


def test_int8_clips_at_type_limits():
    q = quantize(np.array([1000.0, -1000.0, 12.45, -13.2], dtype=np.float32), INT8)
    assert q.tolist() == [127, -128, 127, -128]


def test_uint8_detail_clips_at_zero_and_255():
    detail = {"dtype": np.uint8, "quantization": (0.5, 10)}
    assert quantize(np.array([-100.0, 0.0, 200.0], dtype=np.float32), detail).tolist() == [0, 10, 255]


def test_float_tensors_pass_through():
    x = np.array([[-1.5, 0.25, 3.0]], dtype=np.float64)
    detail = {"dtype": np.float32, "quantization": (0.0, 0)}
    q = quantize(x, detail)
    assert q.dtype == np.float32
    np.testing.assert_array_equal(q, x.astype(np.float32))
    back = dequantize(q, detail)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, q)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build("mobilenetv2", 3, 1, 8).eval()


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)


def test_predict_torch_module_gives_probabilities(small_model, images, tiny_meta):
    probs = predict(small_model, images, tiny_meta)
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs >= 0).all()
    # same as normalising by hand, NHWC → NCHW, and a softmax
    x = (images.astype(np.float32) / 255.0 - 0.5) / 0.25
    with torch.inference_mode():
        logits = small_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(probs, softmax(logits.astype(np.float64), axis=1), atol=1e-6)


def test_predict_is_independent_of_batch_size(small_model, images, tiny_meta):
    np.testing.assert_allclose(predict(small_model, images, tiny_meta, batch_size=2),
                               predict(small_model, images, tiny_meta), atol=1e-6)


def test_predict_checkpoint_path_matches_module(tmp_path, small_model, images, tiny_meta):
    path = tmp_path / "m.pt"
    save_checkpoint(small_model, ModelSpec("mobilenetv2", 3, 1, 8), path)
    np.testing.assert_allclose(predict(path, images, tiny_meta), predict(small_model, images, tiny_meta),
                               atol=1e-7)


def test_predict_accepts_a_runner_callable(images, tiny_meta):
    seen = []

    def runner(x):
        seen.append(x.shape)
        return np.zeros((len(x), 3), dtype=np.float32)
    probs = predict(runner, images, tiny_meta, batch_size=4)
    assert seen == [(4, 8, 8, 1), (1, 8, 8, 1)]  # NHWC float batches
    np.testing.assert_allclose(probs, 1 / 3)


def test_load_runner_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        load_runner(tmp_path / "missing.onnx")


def test_load_runner_unknown_suffix_raises(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("not a model")
    with pytest.raises(ValueError, match=r"\.txt"):
        load_runner(path)


def test_load_runner_module_returns_logits(images):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    run = load_runner(model)
    out = run(np.zeros((3, 8, 8, 1), dtype=np.float32))
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out, np.broadcast_to(model[1].bias.detach().numpy(), (3, 2)), atol=1e-6)
