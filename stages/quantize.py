"""quantize: post-training dynamic-range and full-INT8 TFLite models, calibrated on training images."""

import argparse
import os

import numpy as np

from lib.cli import run
from lib.experiment import setup
from lib.export import quantize_dynamic_range, quantize_int8
from lib.io import atomic_path, write_json
from lib.metrics import agreement, auc_score, accuracy_from_probs
from lib.runtimes import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--onnx", default="models/student.onnx")
    parser.add_argument("--float", default="models/student_float32.tflite")
    parser.add_argument("--dynamic", default="models/student_dynamic.tflite")
    parser.add_argument("--int8", default="models/student_int8.tflite")
    parser.add_argument("--metrics", default="metrics/quantize.json")
    args = parser.parse_args()

    ctx = setup(args.data)
    cfg = ctx.params.quantize
    train_images, _ = ctx.splits["train"]
    rng = np.random.default_rng(ctx.params.seed)
    picked = rng.choice(len(train_images), size=min(cfg.calibration_samples, len(train_images)), replace=False)
    calibration = train_images[np.sort(picked)].astype(np.float32) / 255.0

    images, labels = ctx.splits["test"]
    reference = predict(args.float, images, ctx.meta)
    float_size = os.path.getsize(args.float)
    report = {"calibration_samples": len(picked), "int8_io": cfg.int8_io, "per_channel": cfg.per_channel,
              "float32": {"size_bytes": float_size}}
    with atomic_path(args.dynamic) as dynamic, atomic_path(args.int8) as int8:
        quantize_dynamic_range(args.onnx, dynamic)
        quantize_int8(args.onnx, calibration, ctx.meta["mean"], ctx.meta["std"], int8, cfg.int8_io,
                      cfg.per_channel)
        for name, path in (("dynamic_range", dynamic), ("int8", int8)):
            probs = predict(path, images, ctx.meta)
            size = os.path.getsize(path)
            report[name] = {"size_bytes": size, "size_vs_float32": round(size / float_size, 6),
                            "test": {"accuracy": accuracy_from_probs(labels, probs),
                                     "auc": auc_score(labels, probs)},
                            "agreement_vs_float32": agreement(reference, probs)}
    report["float32"]["test"] = {"accuracy": accuracy_from_probs(labels, reference),
                                 "auc": auc_score(labels, reference)}
    write_json(args.metrics, report)


if __name__ == "__main__":
    run(main)
