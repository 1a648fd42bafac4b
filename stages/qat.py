"""qat: with `quantize.method: qat`, fine-tune the pruned student with fake quantization (the pruned
fine-tune's CE + distillation loss), then write its INT8 ONNX Runtime and INT8 TFLite models.

With `method: ptq` (the default) it only writes a models folder holding a note and a metrics file saying
so: DVC stages cannot be conditional, and a stage that always exists keeps the PTQ artifacts, their stage
and its lock untouched whichever method runs, so `dvc exp run -S quantize.method=qat` reruns only this
stage and the benchmark.
"""

import argparse
import dataclasses
import tempfile
from functools import partial
from pathlib import Path

from torch import nn

from lib import artifacts, qat
from lib.cli import run
from lib.context import Context, calibration_images, convert_checked, run_info, score, setup, split_figures
from lib.export import quantize_int8
from lib.io import atomic_path, write_json
from lib.losses import distillation_criterion
from lib.models import load_checkpoint
from lib.runtimes import predict
from lib.training import train

ONNX_NAME, TFLITE_NAME = (Path(artifacts.by_name(name).file).name for name in ("qat_onnx", "qat_tflite"))
# ONNX Runtime requantizes each layer's output in integer arithmetic, fake quantization in float: an
# occasional one-step rounding difference is expected, a different model is not. Measured on PneumoniaMNIST
# (default recipe, seed 42): 99.68 % agreement, max |Δprob| 0.10 on an image near the decision boundary.
MIN_AGREEMENT, MAX_PROB_DIFF = 0.99, 0.25
PTQ_NOTE = "quantize.method is ptq: no quantization-aware models. Set it to qat to write them here.\n"


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
        if ctx.params.quantize.method == "qat":
            report = quantization_aware(ctx, args, out)
        else:  # a note, not an empty folder, which DVC would warn about on every run
            (out / "README.txt").write_text(PTQ_NOTE)
            report = {}
    write_json(args.metrics, {"method": ctx.params.quantize.method, **report})


def quantization_aware(ctx: Context, args: argparse.Namespace, out: Path) -> dict:
    """Fine-tune with fake quantization, export both INT8 models into `out`; return the stage's figures."""
    cfg = ctx.params.quantize
    student, _ = load_checkpoint(args.student)
    teacher, _ = load_checkpoint(args.teacher, ctx.device)
    model = qat.prepare(student, ctx.example_input(), cfg.per_channel)
    ctx = without_weight_average(ctx)
    with tempfile.TemporaryDirectory() as work:
        model, info = train(model, distillation_criterion(ctx, teacher), ctx, cfg.qat_epochs, cfg.qat_lr,
                            Path(work) / "live", "fp32")  # fake quantization simulates int8 from fp32
        model = model.cpu()
        float_onnx = Path(work) / "float.onnx"
        qat.export_onnx(qat.float_copy(model), ctx.example_input(), float_onnx, ctx.params.export.opset)
        return {"finetune": info, "finetuned": score(model, ctx), **run_info(ctx),
                **export_checked(ctx, model, float_onnx, out)}


def without_weight_average(ctx: Context) -> Context:
    """QAT trains without `train.ema_decay`: the average would blend the fake quantizers' scales but not their
    integer zero points, and its copy of the model lacks the hook that stops the observers outside training,
    so validation images would move the ranges it keeps."""
    train_cfg = dataclasses.replace(ctx.params.train, ema_decay=0.0)
    return dataclasses.replace(ctx, params=dataclasses.replace(ctx.params, train=train_cfg))


def export_checked(ctx: Context, model: nn.Module, float_onnx: Path, out: Path) -> dict:
    """Both INT8 artifacts with the test figures of each and of the QAT model's float weights.

    The ONNX Runtime model must reproduce the fake-quant model (it runs the same int8 arithmetic: the stage
    fails otherwise); the TFLite model, calibrated from the float weights, is compared with them.
    """
    images, labels = ctx.splits["test"]
    task = ctx.task
    fake_quant, float32 = predict(model, images, ctx.meta), predict(float_onnx, images, ctx.meta)
    export = partial(qat.export_onnx, model, ctx.example_input(), opset=ctx.params.export.opset)
    written = convert_checked(ctx, export, out / ONNX_NAME, fake_quant, "QAT INT8 ONNX vs fake-quant",
                              MIN_AGREEMENT, MAX_PROB_DIFF)
    quantize_int8(float_onnx, calibration_images(ctx), ctx.meta["mean"], ctx.meta["std"], out / TFLITE_NAME,
                  ctx.params.quantize.int8_io, ctx.params.quantize.per_channel)
    int8_onnx, int8_tflite = (predict(out / name, images, ctx.meta) for name in (ONNX_NAME, TFLITE_NAME))
    return {
        "float32": {"test": split_figures(task, labels, float32),
                    "agreement_vs_fake_quant": task.agreement(fake_quant, float32)},
        "int8_onnx": {"size_bytes": written["size_bytes"], "test": split_figures(task, labels, int8_onnx),
                      "agreement_vs_fake_quant": written["parity"]},
        "int8_tflite": {"size_bytes": (out / TFLITE_NAME).stat().st_size,
                        "test": split_figures(task, labels, int8_tflite),
                        "agreement_vs_float32": task.agreement(float32, int8_tflite),
                        "agreement_vs_fake_quant": task.agreement(fake_quant, int8_tflite)},
    }


if __name__ == "__main__":
    run(main)
