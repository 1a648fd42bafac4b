"""explain: Grad-CAM of the teacher, the student and the pruned student on the same seeded test images."""

import argparse

from lib.cli import run
from lib.context import setup
from lib.explain import gradcam, plot_grid, stratified_sample
from lib.io import atomic_path
from lib.models import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--teacher", default="models/teacher.pt")
    parser.add_argument("--student", default="models/student.pt")
    parser.add_argument("--pruned", default="models/student_pruned.pt")
    parser.add_argument("--plots", default="plots/explain")
    args = parser.parse_args()

    ctx = setup(args.data)
    images, labels = ctx.splits["test"]
    chosen = stratified_sample(ctx.task, labels, ctx.params.explain.samples, ctx.params.seed)
    images, labels = images[chosen], labels[chosen]
    explanations = {name: gradcam(load_checkpoint(path, ctx.device)[0], images, ctx.meta, ctx.device)
                    for name, path in (("teacher", args.teacher), ("student", args.student),
                                       ("pruned", args.pruned))}
    with atomic_path(args.plots) as tmp:
        tmp.mkdir()
        plot_grid(images, labels, explanations, ctx.task, tmp / "gradcam.png")


if __name__ == "__main__":
    run(main)
