"""qat: with `quantize.method: qat`, fine-tune the pruned student with fake quantization (the pruned
fine-tune's CE + distillation loss), then write its INT8 ONNX Runtime and INT8 TFLite models.

With `method: ptq` (the default) it only writes an empty models folder and a metrics file saying so:
DVC stages cannot be conditional, and a stage that always exists keeps the PTQ artifacts, their stage
and its lock untouched whichever method runs, so `dvc exp run -S quantize.method=qat` reruns only this
stage and the benchmark.
"""

import argparse
import os
import tempfile
from pathlib import Path

from torch import nn

from lib import qat
from lib.cli import run
from lib.data import is_multi_label
from lib.experiment import (Context, calibration_images, check_parity, distillation_loss, run_info, score,
                            setup, split_figures, train)
from lib.export import quantize_int8
from lib.io import atomic_path, write_json
from lib.metrics import agreement
from lib.models import load_checkpoint
from lib.runtimes import predict

ONNX_NAME, TFLITE_NAME = "student_qat_int8.onnx", "student_qat_int8.tflite"
# ONNX Runtime requantizes each layer's output in integer arithmetic, fake quantization in float: an
# occasional one-step rounding difference is expected, a different model is not. Measured on PneumoniaMNIST
# (default recipe, seed 42): 99.68 % agreement, max |Δprob| 0.10 on an image near the decision boundary.
MIN_AGREEMENT, MAX_PROB_DIFF = 0.99, 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--teacher", default="models/teacher.pt")
    parser.add_argument("--student", default="models/student_pruned.pt")
    parser.add_argument("--models", default="models/qat")
    parser.add_argument("--metrics", default="metrics/qat.json")
    args = parser.parse_args()

    ctx = setup(args.data)
    with atomic_path(args.models) as out:
        out.mkdir()
        report = quantization_aware(ctx, args, out) if ctx.params.quantize.method == "qat" else {}
    write_json(args.metrics, {"method": ctx.params.quantize.method, **report})


def quantization_aware(ctx: Context, args: argparse.Namespace, out: Path) -> dict:
    """Fine-tune with fake quantization, export both INT8 models into `out`; return the stage's figures."""
    cfg = ctx.params.quantize
    student, _ = load_checkpoint(args.student)
    teacher, _ = load_checkpoint(args.teacher, ctx.device)
    model = qat.prepare(student, ctx.example_input(), cfg.per_channel)
    with tempfile.TemporaryDirectory() as work:
        model, info = train(model, distillation_loss(ctx, teacher), ctx, cfg.qat_epochs, cfg.qat_lr,
                            Path(work) / "live", "fp32")  # fake quantization simulates int8 from fp32
        model = model.cpu()
        float_onnx = Path(work) / "float.onnx"
        qat.export_onnx(qat.float_copy(model), ctx.example_input(), float_onnx, ctx.params.export.opset)
        qat.export_onnx(model, ctx.example_input(), out / ONNX_NAME, ctx.params.export.opset)
        quantize_int8(float_onnx, calibration_images(ctx), ctx.meta["mean"], ctx.meta["std"],
                      out / TFLITE_NAME, cfg.int8_io, cfg.per_channel)
        return {"finetune": info, "finetuned": score(model, ctx), **run_info(ctx),
                **parity(ctx, model, float_onnx, out)}


def parity(ctx: Context, model: nn.Module, float_onnx: Path, out: Path) -> dict:
    """Test figures of the QAT model's float weights and of both INT8 artifacts, with top-1 agreement.

    The ONNX Runtime model must reproduce the fake-quant model (it runs the same int8 arithmetic: the stage
    fails otherwise); the TFLite model is compared with the float model it was converted from.
    """
    images, labels = ctx.splits["test"]
    multi_label = is_multi_label(ctx.meta)
    fake_quant, float32 = predict(model, images, ctx.meta), predict(float_onnx, images, ctx.meta)
    int8_onnx, int8_tflite = (predict(out / name, images, ctx.meta) for name in (ONNX_NAME, TFLITE_NAME))
    return {
        "float32": {"test": split_figures(labels, float32),
                    "agreement_vs_fake_quant": agreement(fake_quant, float32, multi_label)},
        "int8_onnx": {"size_bytes": os.path.getsize(out / ONNX_NAME), "test": split_figures(labels, int8_onnx),
                      "agreement_vs_fake_quant": check_parity(fake_quant, int8_onnx, "QAT INT8 ONNX vs fake-quant",
                                                              MIN_AGREEMENT, MAX_PROB_DIFF, multi_label)},
        "int8_tflite": {"size_bytes": os.path.getsize(out / TFLITE_NAME),
                        "test": split_figures(labels, int8_tflite),
                        "agreement_vs_float32": agreement(float32, int8_tflite, multi_label),
                        "agreement_vs_fake_quant": agreement(fake_quant, int8_tflite, multi_label)},
    }


if __name__ == "__main__":
    run(main)
