"""prune: structured L1 channel pruning of the student, then distillation fine-tune from the teacher."""

import argparse

from lib import checks
from lib.cli import run
from lib.experiment import distillation_loss, run_info, score, setup, train
from lib.io import write_json
from lib.models import load_checkpoint, save_checkpoint
from lib.pruning import count_macs_params, prune_channels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--teacher", default="models/teacher.pt")
    parser.add_argument("--student", default="models/student.pt")
    parser.add_argument("--model", default="models/student_pruned.pt")
    parser.add_argument("--metrics", default="metrics/prune.json")
    parser.add_argument("--live", default="plots/train/finetune")
    args = parser.parse_args()

    ctx = setup(args.data)
    cfg = ctx.params.prune
    model, spec = load_checkpoint(args.student)
    example = ctx.example_input()
    macs_before, params_before = count_macs_params(model, example)
    model = prune_channels(model, example, cfg.ratio, cfg.importance, cfg.iterative_steps, cfg.round_to)
    macs_after, params_after = count_macs_params(model, example)
    report = {
        "ratio": cfg.ratio,
        "params": {"before": params_before, "after": params_after,
                   "removed_fraction": round(1 - params_after / params_before, 6)},
        "macs": {"before": macs_before, "after": macs_after,
                 "removed_fraction": round(1 - macs_after / macs_before, 6)},
        "pruned": score(model.to(ctx.device), ctx),
        **run_info(ctx),
    }
    teacher, _ = load_checkpoint(args.teacher, ctx.device)
    model, report["finetune"] = train(model, distillation_loss(ctx, teacher), ctx, cfg.finetune_epochs,
                                      cfg.lr, args.live, ctx.params.distill.precision)
    report["finetuned"] = score(model, ctx)
    report["warnings"] = checks.announce(checks.single_class_warnings("fine-tuned pruned student",
                                                                      report["finetuned"]))
    save_checkpoint(model, spec, args.model)
    write_json(args.metrics, report)


if __name__ == "__main__":
    run(main)
