"""Classify new images with any trained artifact (`.pt`, `.onnx`, `.tflite`), preprocessed as in training.

    python -m lib.predict models/student_int8.tflite scans/            # a table, best class per image
    python -m lib.predict models/teacher.pt scan.png --top 2 --json    # the two best classes, as JSON

A multi-label model (meta.json `"task": "multi-label"`) gives every label's probability, best first, and
the labels whose probability reaches `--threshold` (default 0.5) as the image's findings.

Images are read by the same function as the imagefolder source and normalised with the statistics in the
`meta.json` of the data the model was trained on, so a prediction sees what training saw.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from lib.artifacts import SUFFIXES
from lib.cli import run
from lib.compute import resolve_device
from lib.errors import UserError
from lib.images import IMAGE_SUFFIXES, read_image
from lib.io import read_json
from lib.models import load_checkpoint
from lib.runtimes import onnx_session, predict, tflite_interpreter
from lib.task import THRESHOLD, Task, for_meta


@dataclass(frozen=True)
class ModelInput:
    """What a model was built for; None where the file leaves it open (a dynamic dimension)."""
    channels: int | None
    image_size: int | None
    num_classes: int | None


def find_images(path: Path) -> list[Path]:
    """`path` itself, or every image file below the folder `path`, sorted."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"IMAGE_OR_FOLDER: {path} does not exist; pass an image file or a folder of images")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"IMAGE_OR_FOLDER: folder {path} holds no images "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def read_images(files: list[Path], size: int, channels: int) -> np.ndarray:
    """uint8 NHWC images at size × size; grayscale by ITU-R 601 luma, which keeps a gray image's values.

    Training reduces an all-gray imagefolder set to its first channel; luma equals that channel on gray
    images and is the faithful reduction of a colour one.
    """
    images = []
    for f in files:
        try:
            rgb = read_image(f, size)
        except ValueError as err:
            raise UserError(str(err)) from err
        images.append(np.asarray(Image.fromarray(rgb).convert("L"))[..., None] if channels == 1 else rgb)
    return np.stack(images)


def load_meta(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"--meta: {path} not found; run the prepare_data stage (dvc repro prepare_data) or "
                        "pass --meta with the meta.json of the data set the model was trained on")
    return read_json(path)


def load_model(path: Path, device: torch.device) -> tuple[nn.Module | Path, ModelInput]:
    """The artifact to give `lib.runtimes.predict`, and the input and classes it was built for."""
    if not path.is_file():
        raise UserError(f"MODEL: {path} not found; pass a .pt, .onnx or .tflite file (see models/)")
    if path.suffix == ".pt":
        try:
            model, spec = load_checkpoint(path, device)
        except ValueError as err:
            raise UserError(str(err)) from err
        return model, ModelInput(spec.in_channels, spec.image_size, spec.num_classes)
    if path.suffix == ".onnx":
        return path, _onnx_input(path)
    if path.suffix == ".tflite":
        return path, _tflite_input(path)
    raise UserError(f"MODEL: {path} has unknown suffix {path.suffix!r}; expected one of "
                    f"{', '.join(SUFFIXES)}")


def _fixed(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _onnx_input(path: Path) -> ModelInput:
    session = onnx_session(path)
    _, channels, height, _ = session.get_inputs()[0].shape  # NCHW
    return ModelInput(_fixed(channels), _fixed(height), _fixed(session.get_outputs()[0].shape[-1]))


def _tflite_input(path: Path) -> ModelInput:
    interpreter = tflite_interpreter(path)
    _, height, _, channels = interpreter.get_input_details()[0]["shape"].tolist()  # NHWC
    classes = interpreter.get_output_details()[0]["shape"].tolist()[-1]
    return ModelInput(_fixed(channels), _fixed(height), _fixed(classes))


def check_compatible(model: ModelInput, meta: dict, model_path: Path, meta_path: Path) -> None:
    """The model must take the images meta.json describes and output one score per class it names."""
    wanted = ModelInput(meta["channels"], meta["image_size"], len(meta["classes"]))
    clashes = [f"{what}: model {got}, meta.json {want}"
               for what, got, want in (("channels", model.channels, wanted.channels),
                                       ("image size", model.image_size, wanted.image_size),
                                       ("classes", model.num_classes, wanted.num_classes))
               if got is not None and got != want]
    if clashes:
        raise UserError(f"{model_path} does not fit {meta_path} ({'; '.join(clashes)}); pass --meta with "
                        "the meta.json of the data set the model was trained on")


def top_k(probs: np.ndarray, classes: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Per image, the k most probable (class, probability) pairs, best first."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(classes[i], float(row[i])) for i in idx] for row, idx in zip(probs, order)]


def as_json(names: list[str], best: list[list[tuple[str, float]]], task: Task, threshold: float) -> str:
    """Per image the task's decision (the best class; the labels reaching `threshold`) and its ranking."""
    return json.dumps([{"file": name, **task.answer(top, threshold),
                        "top": [{"class": c, "probability": p} for c, p in top]}
                       for name, top in zip(names, best)], indent=2)


def as_table(names: list[str], best: list[list[tuple[str, float]]], task: Task, threshold: float) -> str:
    """One row per image and rank: file, class, probability, and the task's extra columns (multi-label:
    whether the label reaches `threshold`)."""
    rows = [(name, c, f"{p:.4f}", *task.table_cells(p, threshold)) for name, top in zip(names, best) for c, p in top]
    header = ("file", "class", "probability", *task.table_extra)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(f"{v:<{w}}" for v, w in zip(row, widths)).rstrip() for row in [header, *rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", type=Path, help="a .pt, .onnx or .tflite file")
    parser.add_argument("images", metavar="IMAGE_OR_FOLDER", type=Path,
                        help="an image, or a folder searched recursively for images")
    parser.add_argument("--meta", type=Path, default=Path("data/processed/meta.json"),
                        help="meta.json of the data set the model was trained on (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--top", type=int, metavar="K", help="show the K most probable classes "
                        "(default 1; multi-label: every label)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help="multi-label: a label is present when its probability reaches this (default 0.5)")
    args = parser.parse_args(argv)

    meta = load_meta(args.meta)
    task = for_meta(meta)
    if args.top is None:
        args.top = task.default_top()
    if not 1 <= args.top <= len(meta["classes"]):
        raise UserError(f"--top: got {args.top}; expected 1 to {len(meta['classes'])} "
                        f"(the number of classes)")
    files = find_images(args.images)
    device = resolve_device("auto")
    model, model_input = load_model(args.model, device)
    check_compatible(model_input, meta, args.model, args.meta)
    images = read_images(files, meta["image_size"], meta["channels"])
    best = top_k(predict(model, images, meta, device=device), meta["classes"], args.top)
    names = [str(f.relative_to(args.images)) if args.images.is_dir() else str(f) for f in files]
    print((as_json if args.json else as_table)(names, best, task, args.threshold))


if __name__ == "__main__":
    run(main)
