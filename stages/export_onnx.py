"""export_onnx: pruned student and teacher → ONNX, each accepted only if ONNX Runtime reproduces torch.

The teacher is exported too so the benchmark can compare the student with the teacher's fastest runtime.
"""

import argparse
from functools import partial

from lib.cli import run
from lib.context import convert_checked, setup
from lib.export import export_onnx
from lib.io import write_json
from lib.models import load_checkpoint
from lib.runtimes import predict

MIN_AGREEMENT, MAX_PROB_DIFF = 1.0, 1e-4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--student", nargs=2, default=["models/student_pruned.pt", "models/student.onnx"],
                        metavar=("CHECKPOINT", "ONNX"))
    parser.add_argument("--teacher", nargs=2, default=["models/teacher.pt", "models/teacher.onnx"],
                        metavar=("CHECKPOINT", "ONNX"))
    parser.add_argument("--metrics", default="metrics/export.json")
    args = parser.parse_args()

    ctx = setup(args.data)
    images, _ = ctx.splits["test"]
    report = {"opset": ctx.params.export.opset, "test_images": len(images)}
    for role, (checkpoint, onnx_path) in (("student", args.student), ("teacher", args.teacher)):
        model, _ = load_checkpoint(checkpoint)
        export = partial(export_onnx, model, ctx.example_input(), opset=ctx.params.export.opset)
        written = convert_checked(ctx, export, onnx_path, predict(model, images, ctx.meta),
                                  f"{role} ONNX vs torch", MIN_AGREEMENT, MAX_PROB_DIFF)
        report[role] = {"size_bytes": written["size_bytes"], "parity_vs_torch": written["parity"]}
    write_json(args.metrics, report)


if __name__ == "__main__":
    run(main)
