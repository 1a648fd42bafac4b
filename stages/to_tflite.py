"""to_tflite: ONNX → float32 TFLite with onnx2tf, accepted only if it reproduces ONNX on the test split."""

import argparse
from functools import partial

from lib.cli import run
from lib.context import convert_checked, setup
from lib.export import to_tflite
from lib.io import write_json
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
    reference = predict(args.onnx, images, ctx.meta)
    written = convert_checked(ctx, partial(to_tflite, args.onnx), args.tflite, reference, "TFLite vs ONNX",
                              MIN_AGREEMENT, MAX_PROB_DIFF)
    write_json(args.metrics, {"size_bytes": written["size_bytes"], "parity_vs_onnx": written["parity"],
                              "test_images": len(images)})


if __name__ == "__main__":
    run(main)
