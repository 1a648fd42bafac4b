"""train_teacher: train the large model on hard labels; keep the best epoch on validation.

A list of models (`teacher: [resnet18, densenet121]`) trains each member with the same recipe, member i
with seed `seed + i`, and saves them as one `Ensemble` network that averages their probabilities.
"""

import argparse
import dataclasses

from torch import nn

from lib import checks
from lib.cli import run
from lib.compute import seed_everything
from lib.context import Context, run_info, score, setup
from lib.io import write_json
from lib.losses import hard_label_criterion
from lib.ensemble import Ensemble, ensemble_arch
from lib.models import save_checkpoint
from lib.training import train
from lib.weights import check_weights, initial_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--model", default="models/teacher.pt")
    parser.add_argument("--metrics", default="metrics/teacher.json")
    parser.add_argument("--live", default="plots/train/teacher")
    args = parser.parse_args()

    ctx = setup(args.data)
    check_weights("teacher_weights", ctx.params.teacher_weights, ctx.params.teachers)  # before any member trains
    arch = ensemble_arch(ctx.params.teachers)
    if isinstance(ctx.params.teacher, str):
        model, info = train_one(ctx, arch, args.live)
    else:
        model, info = train_ensemble(ctx, args.live)
    save_checkpoint(model, ctx.spec(arch), args.model)
    scores = score(model, ctx)
    warnings = checks.announce(checks.collapse_warnings(ctx.task, f"teacher {arch}", scores))
    write_json(args.metrics, {"model": arch, **info, **run_info(ctx), **scores, "warnings": warnings})


def train_one(ctx: Context, arch: str, live_dir: str) -> tuple[nn.Module, dict]:
    cfg = ctx.params.train
    model = ctx.build(arch)
    weights = initial_weights(model, arch, ctx.params.teacher_weights)
    model, info = train(model, hard_label_criterion(ctx), ctx, cfg.epochs, cfg.lr, live_dir, cfg.precision)
    return model, {**info, "weights": weights}


def train_ensemble(ctx: Context, live_dir: str) -> tuple[Ensemble, dict]:
    """Each member trained as a lone teacher would be, at its own seed (the first at `seed` itself), logged
    under `live_dir/<member>`; returns the ensemble and each member's training info and scores."""
    ctx.task.check_ensemble_teacher()
    members, figures = [], {}
    for offset, arch in enumerate(ctx.params.teachers):
        member_ctx = reseeded(ctx, ctx.params.seed + offset)
        model, info = train_one(member_ctx, arch, f"{live_dir}/{arch}")
        members.append(model)
        figures[arch] = {"seed": member_ctx.params.seed, **info, **score(model, ctx)}
    return Ensemble(members), {"members": figures, "weights": {"source": ctx.params.teacher_weights}}


def reseeded(ctx: Context, seed: int) -> Context:
    """`ctx` at another seed: the random number generators and the data order are seeded with it."""
    seed_everything(seed)
    return dataclasses.replace(ctx, params=dataclasses.replace(ctx.params, seed=seed))


if __name__ == "__main__":
    run(main)
