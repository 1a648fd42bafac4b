"""One `predict` over every format: torch modules, ONNX Runtime and TFLite (float and int8).

A runner maps a float32 NHWC batch, normalised as in training, to logits. This module is the only place
that knows ONNX and torch want NCHW, that TFLite wants NHWC, and how int8 inputs/outputs are scaled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from lib.errors import UserError
from lib.processed import normalize
from lib.task import for_meta

Runner = Callable[[np.ndarray], np.ndarray]


def torch_runner(model: nn.Module, device: str | torch.device = "cpu") -> Runner:
    model = model.to(device).eval()

    def run(x: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
        with torch.inference_mode():
            return model(batch).float().cpu().numpy()
    return run


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime session on CPU; a file it cannot load is a one-line `UserError`."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail) as err:
        reason = str(err).split(" failed:", 1)[-1]  # after "[ONNXRuntimeError] … Load model from <path>"
        raise _unreadable(path, "ONNX", reason) from None


def onnx_runner(path: str | Path, threads: int | None = None) -> Runner:
    session = onnx_session(path, threads)
    input_name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    return run


def tflite_interpreter(path: str | Path, threads: int | None = None):
    """A TFLite interpreter; a file it cannot load is a one-line `UserError`."""
    from ai_edge_litert.interpreter import Interpreter

    try:  # loaded from bytes the flatbuffer is verified; loaded from a path a corrupt file crashes Python
        return Interpreter(model_content=Path(path).read_bytes(), num_threads=threads or os.cpu_count() or 1)
    except ValueError as err:
        raise _unreadable(path, "TFLite", str(err)) from None


def tflite_runner(path: str | Path, threads: int | None = None) -> Runner:
    interpreter = tflite_interpreter(path, threads)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    shape = [None]

    def run(x: np.ndarray) -> np.ndarray:
        if shape[0] != x.shape:  # resizing re-plans the graph: only when the batch shape changes
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(inp["index"], quantize(x, inp))
        interpreter.invoke()
        logits = dequantize(interpreter.get_tensor(out["index"]), out)
        if len(logits) != len(x):  # a converter that fixed the output batch at 1 would drop rows silently
            raise RuntimeError(f"{path} answered {len(logits)} rows for a batch of {len(x)}: its output "
                               "batch dimension is fixed, so the conversion is unusable at this batch size")
        return logits
    return run


def _unreadable(path: str | Path, kind: str, reason: str) -> UserError:
    """A model file its runtime rejects: most often a stage output truncated or overwritten since."""
    reason = "empty file" if Path(path).stat().st_size == 0 else " ".join(reason.split())
    return UserError(f"{path} is not a valid {kind} model ({reason}); re-create it with "
                     f"`dvc repro -s -f <stage>` for the stage in dvc.yaml that writes it, "
                     f"or delete it and run `dvc repro`")


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float → the tensor's dtype, with its scale and zero point when it is integer."""
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(q.dtype, np.integer):
        return q.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def load_runner(artifact: nn.Module | str | Path, threads: int | None = None,
                device: str | torch.device = "cpu") -> Runner:
    """A runner for a torch module, a `.pt` checkpoint, an `.onnx` or a `.tflite` file."""
    if isinstance(artifact, nn.Module):
        return torch_runner(artifact, device)
    path = Path(artifact)
    if not path.is_file():
        raise UserError(f"artifact {path} not found: run the stage that writes it (dvc repro)")
    if path.suffix == ".pt":
        from lib.models import load_checkpoint
        return torch_runner(load_checkpoint(path, device)[0], device)
    if path.suffix == ".onnx":
        return onnx_runner(path, threads)
    if path.suffix == ".tflite":
        return tflite_runner(path, threads)
    raise UserError(f"artifact {path}: unknown format {path.suffix!r}; expected .pt, .onnx or .tflite")


def predict(artifact: nn.Module | str | Path | Runner, images: np.ndarray, meta: dict,
            batch_size: int = 256, threads: int | None = None,
            device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 NHWC images → probabilities (N, outputs), for any artifact, by the activation of the task
    `meta` describes (softmax over the classes, a sigmoid per label)."""
    run = artifact if callable(artifact) and not isinstance(artifact, nn.Module) else \
        load_runner(artifact, threads, device)
    logits = np.concatenate([run(normalize(images[i:i + batch_size], meta))
                             for i in range(0, len(images), batch_size)]).astype(np.float64)
    return for_meta(meta).activation(logits)
