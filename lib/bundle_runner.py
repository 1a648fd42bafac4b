"""Classify images with this bundle's INT8 model:  python predict.py scan1.png scan2.jpg [--json]

Needs only NumPy, Pillow and ai-edge-litert (requirements.txt); `--model model_int8.onnx` runs the ONNX model
with onnxruntime instead. Images are decoded, resized and normalised exactly as the model's training and
test images were, with the numbers in preprocessing.json (beside the model), which also describes each step.

This file is the bundle's predict.py, copied verbatim; it imports nothing from the project that built it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

HERE = Path(__file__).resolve().parent
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # 16-bit or float images: rescaled to 8 bit, not clipped
BATCH = 256


def load_image(path: Path, spec: dict) -> np.ndarray:
    """One image file → uint8 (size, size, channels): RGB, resized, then luma when the model is grayscale."""
    size = spec["image_size"]
    with Image.open(path) as img:
        if img.mode in WIDE_MODES:
            pixels = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
            img = Image.fromarray(np.clip(np.rint(pixels * 255.0 / top), 0, 255).astype(np.uint8), "L")
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling[spec["resize"]["filter"]])
        rgb = np.asarray(img, dtype=np.uint8)
    return np.asarray(Image.fromarray(rgb).convert("L"))[..., None] if spec["channels"] == 1 else rgb


def normalize(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 NHWC → float32 NHWC: scaled to [0, 1], then standardised per channel."""
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    return (images.astype(np.float32) / 255.0 - mean) / std


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float → the input tensor's dtype, with its scale and zero point when it is an integer tensor."""
    if not np.issubdtype(detail["dtype"], np.integer):
        return x.astype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(q.dtype, np.integer):
        return q.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def tflite_runner(model: Path):
    """NHWC float batch → logits, with the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model.read_bytes(), num_threads=os.cpu_count() or 1)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], quantize(x, inp))
        interpreter.invoke()
        return dequantize(interpreter.get_tensor(out["index"]), out)
    return run


def onnx_runner(model: Path):
    """NHWC float batch → logits, with ONNX Runtime (the ONNX model takes NCHW)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = os.cpu_count() or 1, 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]


def activate(logits: np.ndarray, spec: dict) -> np.ndarray:
    """Logits → probabilities: a sigmoid per label (multi-label) or a softmax over the classes."""
    logits = logits.astype(np.float64)
    if spec["activation"] == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def decide(probs: np.ndarray, spec: dict, tuned: bool) -> dict:
    """One image's answer by the decision rule: the best class, or the labels reaching their threshold."""
    classes, rule = spec["classes"], spec["decision"]
    if rule["rule"] == "argmax":
        return {"predicted": classes[int(np.argmax(probs))]}
    cut = rule["tuned_thresholds"] if tuned else dict.fromkeys(classes, rule["threshold"])
    ranked = sorted(zip(classes, probs), key=lambda pair: -pair[1])
    return {"positive": [c for c, p in ranked if p >= cut[c]]}


def default_model() -> Path:
    """The TFLite model, or the ONNX one where ai-edge-litert is not installed."""
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        return HERE / "model_int8.onnx"
    return HERE / "model_int8.tflite"


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--json", action="store_true", help="print JSON instead of one line per image")
    parser.add_argument("--model", type=Path, help="model_int8.tflite (default) or model_int8.onnx")
    parser.add_argument("--tuned", action="store_true",
                        help="multi-label: per-label thresholds tuned on validation instead of one threshold")
    args = parser.parse_args(argv)
    model = args.model or default_model()
    spec = json.loads((model.parent / "preprocessing.json").read_text(encoding="utf-8"))
    if args.tuned and not spec["decision"].get("tuned_thresholds"):
        fail("--tuned: this model has no tuned thresholds (see decision in preprocessing.json)")
    try:
        images = np.stack([load_image(path, spec) for path in args.images])
    except (OSError, UnidentifiedImageError, ValueError) as err:
        fail(f"cannot read an image: {err}")
    try:
        run = onnx_runner(model) if model.suffix == ".onnx" else tflite_runner(model)
    except ImportError as err:
        fail(f"{err}; install the runtime: pip install -r requirements.txt")
    logits = np.concatenate([run(normalize(images[i:i + BATCH], spec)) for i in range(0, len(images), BATCH)])
    answers = [{"file": str(path), **decide(row, spec, args.tuned),
                "probabilities": dict(zip(spec["classes"], map(float, row)))}
               for path, row in zip(args.images, activate(logits, spec))]
    if args.json:
        print(json.dumps(answers, indent=2))
        return
    for a in answers:
        decision = a.get("predicted") or ", ".join(a["positive"]) or "(no label)"
        print(f"{a['file']}: {decision}   " + "  ".join(f"{c} {p:.4f}" for c, p in a["probabilities"].items()))


if __name__ == "__main__":
    main()
