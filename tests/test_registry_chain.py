"""Every student through the whole compression chain, tiny: prune → checkpoint → ONNX → TFLite → INT8.

An architecture the registry offers as a student must survive each step with the gates the stages use;
one that cannot is declared teacher-only in `lib.models` and refused at params validation instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import class_image
from lib import models, timm_models
from lib.context import check_parity
from lib.export import export_onnx, quantize_int8, to_tflite
from lib.models import ModelSpec, build, load_checkpoint, save_checkpoint
from lib.processed import normalize
from lib.pruning import count_macs_params, prune_channels
from lib.runtimes import predict
from lib.task import for_meta

SIZE = 28
META = {"classes": ["dark", "bright"], "mean": [0.5], "std": [0.25], "channels": 1, "image_size": SIZE}
TASK = for_meta(META)
# The parity gate of the to_tflite stage (stages/to_tflite.py): top-1 agreement and largest probability
# difference of TFLite against ONNX. Keep equal to the stage's values.
MIN_AGREEMENT, MAX_PROB_DIFF = 0.999, 1e-3
# The chain converts each student twice with onnx2tf (about a minute each on 2 cores). Two small students of
# shapes no end-to-end project has (squeeze-excitation and hard-swish, a timm net) run in every `make test`;
# the default student, mobilenetv2, and squeezenet1_1 (fire modules) run the whole DAG in the end-to-end
# projects (conftest); the others, the timm students but one and the narrowest widths are marked slow and run
# with `make test-all`.
QUICK = {"mobilenetv3_small", "timm/mobilenetv4_conv_small"}
NAMES = [name for name in models.available() if not models.architecture(name).teacher_only] + \
    [timm_models.PREFIX + name for name in sorted(timm_models.STUDENTS)]
STUDENTS = [pytest.param(name, 1.0, marks=() if name in QUICK else pytest.mark.slow) for name in NAMES] + \
    [pytest.param(name, 0.25, marks=pytest.mark.slow) for name in NAMES if 0.25 in models.architecture(name).widths]


def _train_images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 8)
    images = np.stack([class_image(rng, label, SIZE, rgb=False) for label in labels])[..., None]
    return images, labels


def _graded_images() -> np.ndarray:
    """Brightness from black to white: a model that learned dark vs bright answers along a range."""
    rng = np.random.default_rng(1)
    levels = np.linspace(0, 255, 16)
    noise = rng.integers(-20, 21, (16, SIZE, SIZE, 1))
    return np.clip(levels[:, None, None, None] + noise, 0, 255).astype(np.uint8)


def _fine_tune(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> nn.Module:
    """A few steps on dark vs bright, then batch-norm statistics of that data: outputs that vary.

    Ten steps are too few for running averages to settle (that the registry's batch-norm momentum lets
    them settle in a real run is tested in test_models), so they are recomputed here as exact averages.
    """
    x = torch.from_numpy(normalize(images, META).transpose(0, 3, 1, 2))
    y = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(10):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batch below
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.mark.chain  # scheduled with the builds (conftest)
@pytest.mark.parametrize("arch, width", STUDENTS)
def test_student_survives_pruning_export_and_int8(tmp_path, arch, width):
    torch.manual_seed(0)
    images, labels = _train_images()
    graded = _graded_images()
    example = torch.zeros(1, 1, SIZE, SIZE)
    model = build(arch, 2, 1, SIZE, width)
    _, params_before = count_macs_params(model, example)
    model = _fine_tune(prune_channels(model, example, 0.5, "l1", 1, 8), images, labels)
    assert count_macs_params(model, example)[1] < 0.75 * params_before

    save_checkpoint(model, ModelSpec(arch, 2, 1, SIZE, width), tmp_path / "pruned.pt")
    reloaded, _ = load_checkpoint(tmp_path / "pruned.pt")
    reference = predict(model, graded, META)
    np.testing.assert_allclose(predict(reloaded, graded, META), reference, atol=1e-6)

    export_onnx(reloaded, example, tmp_path / "m.onnx", opset=18)
    onnx_probs = predict(tmp_path / "m.onnx", graded, META, threads=1)
    np.testing.assert_allclose(onnx_probs, reference, atol=1e-4)

    to_tflite(tmp_path / "m.onnx", tmp_path / "float32.tflite")
    float_probs = predict(tmp_path / "float32.tflite", graded, META, threads=1)
    check_parity(TASK, onnx_probs, float_probs, "TFLite vs ONNX", MIN_AGREEMENT, MAX_PROB_DIFF)

    quantize_int8(tmp_path / "m.onnx", images.astype(np.float32) / 255, META["mean"], META["std"],
                  tmp_path / "int8.tflite", int8_io=False, per_channel=False)
    int8_probs = predict(tmp_path / "int8.tflite", graded, META, threads=1)
    assert np.ptp(float_probs[:, 1]) > 0.05, "the fine-tuned float model should answer along a range"
    assert np.ptp(int8_probs[:, 1]) > 0.01, f"INT8 output is constant: {int8_probs[:, 1].round(3)}"
    assert np.corrcoef(float_probs[:, 1], int8_probs[:, 1])[0, 1] > 0.5, "INT8 does not follow float"
