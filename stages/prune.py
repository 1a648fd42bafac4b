"""prune: structured L1 channel pruning of the student, then distillation fine-tune from the teacher.

`prune.iterative_steps` > 1 prunes step by step along torch-pruning's linear schedule, with a short
fine-tune (`prune.step_epochs`) after every step but the last; `prune.ratio: 0` passes the student through.
`prune.method: unstructured` zeroes single weights instead (global magnitude pruning, same schedule and
fine-tune; lib.prune_methods).
"""

import argparse
import functools
from pathlib import Path

from torch import nn

from lib import checks
from lib.cli import run
from lib.context import Context, run_info, score, setup
from lib.io import write_json
from lib.losses import distilling, student_criterion
from lib.models import load_checkpoint, save_checkpoint
from lib.prune_methods import METHODS, size_figures
from lib.pruning import count_macs_params
from lib.sparsity import make_permanent
from lib.training import train


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
    if cfg.ratio == 0:
        model, pruning = passthrough(model, ctx, args.live)
    else:
        model, pruning = prune_and_finetune(model, ctx, args.teacher, args.live)
    save_checkpoint(make_permanent(model), spec, args.model)  # plain dense weights, zeros included
    saved, _ = load_checkpoint(args.model)  # the sizes and the sparsity are counted from what was saved
    report = {
        "method": cfg.method,
        "ratio": cfg.ratio,
        **size_figures(METHODS[cfg.method], saved, example, macs_before, params_before),
        **pruning,
        **run_info(ctx),
    }
    report["finetuned"] = score(model, ctx)
    report["warnings"] = checks.announce(checks.collapse_warnings(ctx.task, "fine-tuned pruned student",
                                                                  report["finetuned"]))
    write_json(args.metrics, report)


def passthrough(model: nn.Module, ctx: Context, live_dir: str) -> tuple[nn.Module, dict]:
    """`prune.ratio: 0`: the student as it is, not fine-tuned; its (DVC output) live folder stays empty."""
    Path(live_dir).mkdir(parents=True, exist_ok=True)
    return model, {"pruned": score(model.to(ctx.device), ctx), "steps": [],
                   "finetune": {"skipped": "prune.ratio is 0: nothing was pruned"}}


def prune_and_finetune(model: nn.Module, ctx: Context, teacher_path: str, live_dir: str) -> tuple[nn.Module, dict]:
    """Prune step by step, fine-tune `step_epochs` after each step but the last, then `finetune_epochs`.

    The loss (and the teacher in it) is made when first needed: with one step, after pruning, where it has
    always been made, so the default recipe draws the same random numbers as before steps existed.
    """
    cfg = ctx.params.prune
    example = ctx.example_input()
    criterion = functools.cache(lambda: student_criterion(ctx, teacher_path))
    method, steps = METHODS[cfg.method], []
    for step, ratio in enumerate(method.steps(model, example, cfg), start=1):
        steps.append({"step": step, "ratio": ratio, **method.step_figures(model, example),
                      "pruned": score(model.to(ctx.device), ctx, ("val",))["val"][ctx.params.train.monitor]})
        if step < cfg.iterative_steps and cfg.step_epochs:
            _, steps[-1]["finetune"] = train(model, criterion(), ctx, cfg.step_epochs, cfg.lr,
                                             f"{live_dir}/step{step}", ctx.params.distill.precision)
    report = {"pruned": score(model.to(ctx.device), ctx), "steps": steps, "distilled": distilling(ctx)}
    model, report["finetune"] = train(model, criterion(), ctx, cfg.finetune_epochs, cfg.lr, live_dir,
                                      ctx.params.distill.precision)
    return model, report


if __name__ == "__main__":
    run(main)
