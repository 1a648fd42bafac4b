"""train_teacher: train the large model on hard labels; keep the best epoch on validation."""

import argparse

from lib import checks
from lib.cli import run
from lib.experiment import hard_label_loss, run_info, score, setup, train
from lib.io import write_json
from lib.models import save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--model", default="models/teacher.pt")
    parser.add_argument("--metrics", default="metrics/teacher.json")
    parser.add_argument("--live", default="plots/train/teacher")
    args = parser.parse_args()

    ctx = setup(args.data)
    arch = ctx.params.teacher
    cfg = ctx.params.train
    model, info = train(ctx.build(arch), hard_label_loss(ctx), ctx, cfg.epochs, cfg.lr, args.live, cfg.precision)
    save_checkpoint(model, ctx.spec(arch), args.model)
    scores = score(model, ctx)
    warnings = checks.announce(checks.single_class_warnings(f"teacher {arch}", scores))
    write_json(args.metrics, {"model": arch, **info, **run_info(ctx), **scores, "warnings": warnings})


if __name__ == "__main__":
    run(main)
