"""to_tflite: ONNX → float32 TFLite with onnx2tf, accepted only if it reproduces ONNX on the test split."""

import argparse
import os

from lib.cli import run
from lib.data import is_multi_label
from lib.experiment import check_parity, setup
from lib.export import to_tflite
from lib.io import atomic_path, write_json
from lib.runtimes import predict

MIN_AGREEMENT, MAX_PROB_DIFF = 0.999, 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--onnx", default="models/student.onnx")
    parser.add_argument("--tflite", default="models/student_float32.tflite")
    parser.add_argument("--metrics", default="metrics/tflite.json")
    args = parser.parse_args()

    ctx = setup(args.data)
    images, _ = ctx.splits["test"]
    with atomic_path(args.tflite) as tmp:
        to_tflite(args.onnx, tmp)
        parity = check_parity(predict(args.onnx, images, ctx.meta), predict(tmp, images, ctx.meta),
                              "TFLite vs ONNX", MIN_AGREEMENT, MAX_PROB_DIFF, is_multi_label(ctx.meta))
        size = os.path.getsize(tmp)
    write_json(args.metrics, {"size_bytes": size, "parity_vs_onnx": parity, "test_images": len(images)})


if __name__ == "__main__":
    run(main)
