"""distill: train the small student on the frozen teacher's soft targets plus the hard labels."""

import argparse

from lib import checks
from lib.cli import run
from lib.experiment import distillation_loss, run_info, score, setup, train
from lib.io import write_json
from lib.models import load_checkpoint, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--teacher", default="models/teacher.pt")
    parser.add_argument("--model", default="models/student.pt")
    parser.add_argument("--metrics", default="metrics/student.json")
    parser.add_argument("--live", default="plots/train/student")
    args = parser.parse_args()

    ctx = setup(args.data)
    teacher, _ = load_checkpoint(args.teacher, ctx.device)
    arch, width, cfg = ctx.params.student, ctx.params.student_width, ctx.params.distill
    model, info = train(ctx.build(arch, width), distillation_loss(ctx, teacher), ctx, cfg.epochs, cfg.lr,
                        args.live, cfg.precision)
    save_checkpoint(model, ctx.spec(arch, width), args.model)
    scores = score(model, ctx)
    warnings = checks.announce(checks.single_class_warnings(f"student {arch}", scores))
    write_json(args.metrics, {"model": arch, **info, **run_info(ctx), **scores, "warnings": warnings})


if __name__ == "__main__":
    run(main)
