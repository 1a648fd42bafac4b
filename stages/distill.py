"""distill: train the small student on the frozen teacher's soft targets plus the hard labels.

With `distill.alpha: 0` (distillation off) the student trains on the hard labels alone; the teacher is not loaded.
"""

import argparse

from lib import checks
from lib.cli import run
from lib.context import run_info, score, setup
from lib.io import write_json
from lib.losses import distilling, student_criterion
from lib.models import build_from_spec, save_checkpoint
from lib.training import train
from lib.weights import initial_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--teacher", default="models/teacher.pt")
    parser.add_argument("--model", default="models/student.pt")
    parser.add_argument("--metrics", default="metrics/student.json")
    parser.add_argument("--live", default="plots/train/student")
    args = parser.parse_args()

    ctx = setup(args.data)
    criterion = student_criterion(ctx, args.teacher)  # loading the teacher draws on the seeded RNG: first
    arch, width, cfg = ctx.params.student, ctx.params.student_width, ctx.params.distill
    spec = ctx.spec(arch, width, ctx.params.student_last_stride)
    model = build_from_spec(spec)
    weights = initial_weights(model, arch, ctx.params.student_weights, width, key="student_weights")
    model, info = train(model, criterion, ctx, cfg.epochs, cfg.lr, args.live, cfg.precision)
    save_checkpoint(model, spec, args.model)
    scores = score(model, ctx)
    warnings = checks.announce(checks.collapse_warnings(ctx.task, f"student {arch}", scores))
    write_json(args.metrics, {"model": arch, "distilled": distilling(ctx), **info, **run_info(ctx), **scores,
                              "weights": weights, "warnings": warnings})


if __name__ == "__main__":
    run(main)
