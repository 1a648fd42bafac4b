"""The deployable bundle: one folder, written atomically, that runs the INT8 model anywhere Python runs.

    model_int8.tflite, model_int8.onnx   the deployed INT8 model (LiteRT) and its ONNX Runtime counterpart
    labels.txt                           the classes (labels), one a line, in output order
    preprocessing.json                   decoding, resizing, scaling, tensors, activation and decision rule
    predict.py                           the runner (a copy of lib/bundle_runner.py): NumPy, Pillow, LiteRT
    requirements.txt                     the runner's packages, pinned as in the project's requirements.txt
    README.md                            running it on a Raspberry Pi, using the .tflite on Android
    MODEL_CARD.md, model_card.html       the model card of the run (lib.model_card)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from lib import artifacts, bundle_runner, model_card
from lib.artifacts import DEPLOYED
from lib.bundle_readme import readme
from lib.card_plots import card_figures
from lib.card_render import to_html, to_markdown
from lib.errors import UserError
from lib.images import WIDE_MODES
from lib.io import atomic_path, read_json
from lib.task import for_meta

MODELS = {"model_int8.tflite": DEPLOYED, "model_int8.onnx": "int8_onnx"}  # bundle file → artifact
LAYOUTS = {".tflite": "NHWC", ".onnx": "NCHW"}  # what lib.runtimes feeds each format
RUNNER_PACKAGES = ("ai-edge-litert", "numpy", "pillow")
ONNX_PACKAGE = "onnxruntime"
RESAMPLE = "BILINEAR"  # the Pillow filter of lib.images.read_image (tests/test_bundle.py checks they agree)
ONNX_TYPES = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


def load_metrics(folder: Path) -> dict[str, dict]:
    """metrics/<stage>.json of every stage the model card reads, by stage name."""
    missing = [f"{folder}/{s}.json" for s in model_card.METRICS_FILES if not (folder / f"{s}.json").is_file()]
    if missing:
        raise UserError(f"{', '.join(missing)} not found: run the pipeline first (dvc repro)")
    return {stage: read_json(folder / f"{stage}.json") for stage in model_card.METRICS_FILES}


def runner_requirements(requirements: Path) -> str:
    """The runner's requirements.txt: the exact pins of RUNNER_PACKAGES (and, commented, ONNX Runtime)."""
    pins = {}
    for line in requirements.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if "==" in spec:
            pins[re.sub(r"[-_.]+", "-", spec.split("==")[0].strip()).lower()] = spec
    missing = [p for p in (*RUNNER_PACKAGES, ONNX_PACKAGE) if p not in pins]
    if missing:
        raise UserError(f"{requirements}: no exact pin (name==version) for {', '.join(missing)}; the bundle's "
                        "requirements.txt copies these pins")
    return ("# predict.py with model_int8.tflite: NumPy, Pillow and the LiteRT interpreter, pinned as in the\n"
            "# project that built and tested the model.\n" + "".join(f"{pins[p]}\n" for p in RUNNER_PACKAGES)
            + f"# predict.py --model model_int8.onnx needs ONNX Runtime instead of LiteRT:\n# {pins[ONNX_PACKAGE]}\n")


def _tflite_tensor(detail: dict, layout: str) -> dict:
    integer = np.issubdtype(detail["dtype"], np.integer)
    scale, zero_point = detail["quantization"]
    return {"name": detail["name"], "layout": layout, "dtype": np.dtype(detail["dtype"]).name,
            "shape": [d if d >= 0 else "N" for d in detail["shape_signature"].tolist()],
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if integer else None}


def _onnx_tensor(node, layout: str) -> dict:
    return {"name": node.name, "layout": layout, "dtype": ONNX_TYPES.get(node.type, node.type),
            "shape": [d if isinstance(d, int) else "N" for d in node.shape], "quantization": None}


def tensors(path: Path) -> dict:
    """The model file's input and output tensors: name, layout, shape (N: any batch), dtype, int8 scaling.

    Read with the runtimes themselves rather than lib.runtimes, whose model registry the bundle does not need."""
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=path.read_bytes())
        return {"input": _tflite_tensor(interpreter.get_input_details()[0], LAYOUTS[".tflite"]),
                "output": _tflite_tensor(interpreter.get_output_details()[0], "NC")}
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {"input": _onnx_tensor(session.get_inputs()[0], LAYOUTS[".onnx"]),
            "output": _onnx_tensor(session.get_outputs()[0], "NC")}


def preprocessing(meta: dict, model_tensors: dict[str, dict], decision: dict) -> dict:
    """preprocessing.json: the numbers predict.py reads, and in `steps` exactly what lib.predict does."""
    size, task = meta["image_size"], for_meta(meta)
    shapes = ", ".join(f"{LAYOUTS[Path(f).suffix]} {t['input']['shape']} for {f}" for f, t in model_tensors.items())
    steps = [f"Open with Pillow; modes {', '.join(WIDE_MODES)} (16-bit, 32-bit, float) become 8 bit: "
             "round(v * 255 / 65535) for I;16*, round(v * 255 / max(image max, 1)) otherwise, clipped to 0..255.",
             "Convert to RGB (Image.convert('RGB')).",
             f"Unless it is already {size} x {size}: Image.resize(({size}, {size}), Image.Resampling.{RESAMPLE}) "
             "on the whole image (aspect ratio not kept, no crop, no padding).",
             "Convert to one channel with Image.convert('L'): ITU-R 601-2 luma, L = R*299/1000 + G*587/1000 + "
             "B*114/1000." if meta["channels"] == 1 else "Keep the three channels in R, G, B order.",
             "Scale to float32: x = (pixel / 255 - mean[c]) / std[c], per channel c.",
             f"Batch: {shapes}.",
             "An integer input tensor takes q = clip(round(x / scale + zero_point)); an integer output is read "
             "as (q - zero_point) * scale (see tensors; null quantization: float tensor).",
             f"The output holds logits, one per class; probabilities by {task.activation_name}; then the decision."]
    return {"task": task.name, "classes": meta["classes"], "image_size": size, "channels": meta["channels"],
            "mean": meta["mean"], "std": meta["std"], "color": "L" if meta["channels"] == 1 else "RGB",
            "resize": {"library": "Pillow", "filter": RESAMPLE, "size": [size, size]},
            "scaling": "(pixel / 255 - mean) / std, float32", "steps": steps, "tensors": model_tensors,
            "activation": task.activation_name, "decision": decision}


def write_bundle(out: Path, models_dir: Path, meta: dict, metrics: dict[str, dict], requirements: Path,
                 student_width: float, student_last_stride: int) -> None:
    """Every file of the bundle into `out`, which appears whole or not at all."""
    paths = {name: artifacts.by_name(artifact).path(models_dir) for name, artifact in MODELS.items()}
    for path in paths.values():
        if not path.is_file():
            raise UserError(f"{path} not found: run the quantize stage (dvc repro quantize)")
    spec = preprocessing(meta, {name: tensors(path) for name, path in paths.items()},
                         for_meta(meta).deployed_rule(metrics["benchmark"][DEPLOYED]["test"].get("tuned")))
    card = model_card.build(meta, metrics, spec["decision"], student_width, student_last_stride)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, path in paths.items():
            shutil.copyfile(path, tmp / name)
        (tmp / "labels.txt").write_text("".join(f"{c}\n" for c in meta["classes"]), encoding="utf-8")
        (tmp / "preprocessing.json").write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
        shutil.copyfile(bundle_runner.__file__, tmp / "predict.py")
        (tmp / "requirements.txt").write_text(runner_requirements(requirements))
        (tmp / "README.md").write_text(readme(spec, model_card.data_name(meta)), encoding="utf-8")
        (tmp / "MODEL_CARD.md").write_text(to_markdown(card), encoding="utf-8")
        page = to_html(card, card_figures(meta, metrics["benchmark"]), f"Model card: {model_card.data_name(meta)}")
        (tmp / "model_card.html").write_text(page, encoding="utf-8")
