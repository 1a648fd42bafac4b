"""Quantization-aware training (QAT) of the pruned student, and its two INT8 deployment routes.

Which API: PyTorch's FX graph mode QAT (`torch.ao.quantization.quantize_fx`), the QAT flow this torch
still ships. It is deprecated in favour of torchao's PT2E flow (`prepare_qat_pt2e`), which torch 2.14
no longer contains and torchao is not a dependency here; eager mode would need the network rewritten with
quant stubs and functional adds. FX traces the torchvision students as they are and handles residual
adds itself. Moving to torchao PT2E changes `prepare` only, if its graphs export to ONNX QDQ.

How it trains: batch norms are folded into their convolutions first (eval-mode fusion: FX's QAT
conv-bn modules export as conv → div → batch norm, which ONNX Runtime cannot fuse into an integer
convolution, and a short fine-tune at a low learning rate does not need batch statistics), then fake
quantization is inserted on the weights (int8, symmetric) and on the activations (uint8, full 0–255
range: the ranges ONNX QuantizeLinear and ONNX Runtime's QLinear kernels use). Observers track ranges
only in training mode, so validation and test images never move them.

The two INT8 artifacts:
- ONNX Runtime: the fake-quant graph exports (TorchScript exporter: torch.export stops at the
  observers' on/off switches, a data-dependent branch) as QuantizeLinear/DequantizeLinear pairs with the
  learned scales. ONNX Runtime's offline basic optimisation folds the weights' QuantizeLinear into int8
  initializers, and at load time ONNX Runtime fuses the pairs into QLinearConv / QLinearAdd / QGemm: the
  trained INT8 model, bit for bit in the tests.
- TFLite: onnx2tf does not convert a QDQ graph into an integer model (it drops the activations'
  quantize pairs and writes a float32 TFLite), so the QAT-trained float weights (fake quantization off)
  go through the same calibrated post-training INT8 conversion as the PTQ model. QAT has made those
  weights robust to INT8 rounding; the converter recomputes the activation ranges from calibration.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.ao.quantization import (FakeQuantize, QConfig, default_per_channel_weight_fake_quant,
                                   disable_fake_quant, disable_observer, enable_observer,
                                   get_default_qat_qconfig_mapping)
from torch.ao.quantization.quantize_fx import fuse_fx, prepare_qat_fx

from lib.export import INPUT_NAME, OUTPUT_NAME

BACKEND = "qnnpack"  # uint8 activations over 0–255: x86's reduce_range (0–127) has no ONNX equivalent


def prepare(model: nn.Module, example_input: torch.Tensor, per_channel: bool) -> nn.Module:
    """Fold batch norms, insert fake quantization; the returned graph module trains like any model."""
    mapping = get_default_qat_qconfig_mapping(BACKEND, version=0)  # version 0: exportable FakeQuantize
    if per_channel:
        mapping.set_global(QConfig(activation=mapping.global_qconfig.activation,
                                   weight=default_per_channel_weight_fake_quant))
    fused = fuse_fx(model.cpu().eval())
    prepared = prepare_qat_fx(fused.train(), mapping, (example_input,))
    prepared.register_forward_pre_hook(_observe_only_in_training)
    return prepared


def _observe_only_in_training(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook (a deep copy drops it: `export_onnx` switches the observers off itself)."""
    module.apply(enable_observer if module.training else disable_observer)


def float_copy(model: nn.Module) -> nn.Module:
    """The QAT-trained weights computing in float: fake quantization switched off."""
    return copy.deepcopy(model).apply(disable_fake_quant)


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, opset: int) -> None:
    """A QAT model → ONNX with a dynamic batch; with fake quantization on, an INT8 QDQ model whose weights
    are stored as int8 (see the module docstring), otherwise a float model."""
    model = _scalar_qparams(copy.deepcopy(model).cpu().eval().apply(disable_observer))
    with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
        # the tracer warns that the observers' on/off switches become constants: that is the intent
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = Path(work) / "traced.onnx"
        torch.onnx.export(model, (example_input,), str(traced), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        _fold_constants(traced, Path(path))
    onnx.checker.check_model(str(path), full_check=True)


def _scalar_qparams(model: nn.Module) -> nn.Module:
    """Per-tensor scales and zero points as 0-d tensors: ONNX Runtime fuses QDQ pairs only with scalar ones."""
    for module in model.modules():
        if isinstance(module, FakeQuantize) and not module.is_per_channel:
            module.scale, module.zero_point = module.scale.reshape(()), module.zero_point.reshape(())
    return model


def _fold_constants(src: Path, dest: Path) -> None:
    """ONNX Runtime's basic (hardware-independent) graph optimisation, saved: constant folding turns each
    float weight → QuantizeLinear into an int8 initializer, and the exporter's Identity nodes go."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dest)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
