"""quantize: post-training dynamic-range and full-INT8 TFLite models, and an ONNX Runtime INT8 model,
calibrated on the same training images."""

import argparse
import os

from lib import checks
from lib.cli import run
from lib.context import calibration_images, setup, split_figures
from lib.export import quantize_dynamic_range, quantize_int8, quantize_onnx_int8
from lib.io import atomic_path, write_json
from lib.runtimes import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--onnx", default="models/student.onnx")
    parser.add_argument("--float", default="models/student_float32.tflite")
    parser.add_argument("--dynamic", default="models/student_dynamic.tflite")
    parser.add_argument("--int8", default="models/student_int8.tflite")
    parser.add_argument("--int8-onnx", default="models/student_int8.onnx")
    parser.add_argument("--metrics", default="metrics/quantize.json")
    args = parser.parse_args()

    ctx = setup(args.data)
    cfg = ctx.params.quantize
    calibration = calibration_images(ctx)
    images, labels = ctx.splits["test"]
    references = {"tflite": predict(args.float, images, ctx.meta), "onnx": predict(args.onnx, images, ctx.meta)}
    float_size = os.path.getsize(args.float)
    report = {"calibration_samples": len(calibration), "int8_io": cfg.int8_io, "per_channel": cfg.per_channel,
              "float32": {"size_bytes": float_size, "test": split_figures(ctx.task, labels, references["tflite"])},
              "float32_onnx": {"test": split_figures(ctx.task, labels, references["onnx"])}}
    mean, std = ctx.meta["mean"], ctx.meta["std"]
    with atomic_path(args.dynamic) as dynamic, atomic_path(args.int8) as int8, \
            atomic_path(args.int8_onnx) as int8_onnx:
        quantize_dynamic_range(args.onnx, dynamic)
        quantize_int8(args.onnx, calibration, mean, std, int8, cfg.int8_io, cfg.per_channel)
        quantize_onnx_int8(args.onnx, calibration, mean, std, int8_onnx, cfg.per_channel)
        for name, path, reference in (("dynamic_range", dynamic, "tflite"), ("int8", int8, "tflite"),
                                      ("int8_onnx", int8_onnx, "onnx")):
            probs = predict(path, images, ctx.meta)
            size = os.path.getsize(path)
            report[name] = {"size_bytes": size, "size_vs_float32": round(size / float_size, 6),
                            "test": split_figures(ctx.task, labels, probs),
                            f"agreement_vs_float32_{reference}": ctx.task.agreement(references[reference], probs)}
    report["warnings"] = checks.announce(
        checks.int8_auc_warning("INT8 TFLite", report["int8"]["test"]["auc"], report["float32"]["test"]["auc"])
        + checks.int8_auc_warning("INT8 ONNX", report["int8_onnx"]["test"]["auc"],
                                  report["float32_onnx"]["test"]["auc"]))
    write_json(args.metrics, report)


if __name__ == "__main__":
    run(main)
