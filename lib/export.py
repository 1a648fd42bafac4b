"""Converters: torch → ONNX, ONNX → TFLite float32 (onnx2tf), and post-training quantization.

Each converter's quirks stay here: onnx2tf rewrites its input file (it gets a copy), wants NHWC
calibration data in [0, 1] with the normalisation passed separately, and would download a sample
calibration set if it were not given ours.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import flatbuffers
import numpy as np
import onnx
import torch
from onnx_ir.passes.common import ClearMetadataAndDocStringPass
from torch import nn

from lib.runtimes import onnx_session

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, opset: int) -> None:
    """Export with a dynamic batch dimension and embedded weights, and check the graph.

    The exporter annotates every node with the Python stack trace that created it: absolute paths of
    the Python install and source line numbers. Those are cleared so the same checkpoint gives the same
    bytes on any machine and checkout, and DVC does not rerun the conversions downstream for nothing.
    """
    model = model.cpu().eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(model, (example_input,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                opset_version=opset, dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    ClearMetadataAndDocStringPass()(program.model)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


@contextmanager
def _keras_messages_to_log() -> Iterator[None]:
    """Route tf_keras' progress messages to absl logging (silent by default) instead of stdout.

    For an INT8 model onnx2tf saves a SavedModel through tf_keras' `ExportArchive`, whose `write_out`
    prints every endpoint's signature: one `TensorSpec` line per weight, a hundred lines in a stage log.
    Errors still surface: as exceptions and through onnx2tf's own messages.
    """
    from tf_keras.utils import (disable_interactive_logging, enable_interactive_logging,
                                is_interactive_logging_enabled)

    was_enabled = is_interactive_logging_enabled()
    disable_interactive_logging()
    try:
        yield
    finally:
        if was_enabled:
            enable_interactive_logging()


def check_onnx_file(path: str | Path) -> None:
    """Refuse, in one line, a file that is not an ONNX model, before a converter fails on it with a traceback."""
    onnx_session(path)


def _onnx2tf(onnx_path: Path, work: Path, **options) -> Path:
    check_onnx_file(onnx_path)  # before importing onnx2tf, which takes seconds (TensorFlow)
    import onnx2tf

    src = work / "model.onnx"
    shutil.copyfile(onnx_path, src)  # onnx2tf simplifies and overwrites its input in place
    out = work / "tf"
    with _keras_messages_to_log():
        onnx2tf.convert(input_onnx_file_path=str(src), output_folder_path=str(out),
                        copy_onnx_input_output_names_to_tflite=True, verbosity="error", **options)
    return out


class _SharingBuilder(flatbuffers.Builder):
    """A FlatBuffers builder that writes each distinct numeric vector once and points every user at it."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.vectors: dict[tuple, int] = {}

    def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 (the flatbuffers API's name)
        key = (x.dtype.str, x.shape, x.tobytes())
        if key not in self.vectors:
            self.vectors[key] = super().CreateNumpyVector(x)
        return self.vectors[key]


def store_tflite(produced: Path, path: str | Path) -> None:
    """Write a converted model to `path` with every repeated numeric vector stored once: the same model.

    Per-channel quantization gives each convolution's int8 filter and its int32 bias a float32 scale and
    an int64 zero point per output channel (24 bytes a channel, about 200 KB on the default student).
    The zero points are all 0, but the schema has no narrower type, the interpreter refuses a zero-point
    vector shorter than the scales, and XNNPACK refuses a per-tensor bias beside a per-channel filter.
    A FlatBuffer may point several tables at one vector, though: the zero-point vectors of equal length
    are identical and are written once, which removes about 60 % of the per-channel penalty (and a few KB
    of a per-tensor model). Every accessor returns the same values, so the interpreter builds the same graph.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    data = Path(produced).read_bytes()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    builder = _SharingBuilder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    Path(path).write_bytes(builder.Output())


def to_tflite(onnx_path: str | Path, path: str | Path) -> None:
    """ONNX → float32 TFLite (NHWC input), through onnx2tf."""
    with tempfile.TemporaryDirectory() as work:
        out = _onnx2tf(Path(onnx_path), Path(work))
        store_tflite(out / "model_float32.tflite", path)


def quantize_dynamic_range(onnx_path: str | Path, path: str | Path) -> None:
    """int8 weights, float activations: no calibration data needed."""
    with tempfile.TemporaryDirectory() as work:
        out = _onnx2tf(Path(onnx_path), Path(work), output_dynamic_range_quantized_tflite=True)
        store_tflite(out / "model_dynamic_range_quant.tflite", path)


def quantize_int8(onnx_path: str | Path, calibration: np.ndarray, mean: list[float], std: list[float],
                  path: str | Path, int8_io: bool, per_channel: bool) -> None:
    """Full-integer model: int8 weights and activations, activation ranges calibrated on `calibration`.

    `calibration`: float32 NHWC images in [0, 1] from the training split; onnx2tf normalises them with
    `mean`/`std` exactly as training did. Per-channel weight scales follow the float model more closely;
    per-tensor ones make a smaller file (see `store_tflite`). The int16-activation variants onnx2tf also
    writes are dropped: they run far slower on CPU.
    """
    shape = (1, 1, 1, len(mean))
    with tempfile.TemporaryDirectory() as work:
        calib_file = Path(work) / "calibration.npy"
        np.save(calib_file, calibration.astype(np.float32))
        out = _onnx2tf(
            Path(onnx_path), Path(work), output_integer_quantized_tflite=True,
            quant_type="per-channel" if per_channel else "per-tensor",
            custom_input_op_name_np_data_path=[[INPUT_NAME, str(calib_file),
                                                np.reshape(mean, shape), np.reshape(std, shape)]],
            input_quant_dtype="int8", output_quant_dtype="int8")
        name = "model_full_integer_quant.tflite" if int8_io else "model_integer_quant.tflite"
        store_tflite(out / name, path)


def quantize_onnx_int8(onnx_path: str | Path, calibration: np.ndarray, mean: list[float], std: list[float],
                       path: str | Path, per_channel: bool) -> None:
    """ONNX Runtime static INT8 (QDQ format): the deployment artifact for users who run ORT, not TFLite.

    Calibrated on the same images as the TFLite INT8 model (`calibration`: float32 NHWC in [0, 1]),
    normalised as in training. The graph is first pre-processed (shape inference, constant folding) as
    ONNX Runtime's quantization guide asks.
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    nchw = ((calibration - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(0, 3, 1, 2)

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{INPUT_NAME: np.ascontiguousarray(image[None])} for image in nchw])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    check_onnx_file(onnx_path)
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared))
        quantize_static(str(prepared), str(path), Images(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
