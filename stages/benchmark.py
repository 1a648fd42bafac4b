"""benchmark: every artifact on the same test split — quality, uncertainty, size, MACs, latency."""

import argparse
import tempfile
from pathlib import Path

from lib import artifacts, bench, benchmark
from lib.benchmark_plots import write_benchmark_plots
from lib.cli import run
from lib.context import setup
from lib.io import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--models", default="models")
    parser.add_argument("--metrics", default="metrics/benchmark.json")
    parser.add_argument("--headline", default=artifacts.HEADLINE_PATH)
    parser.add_argument("--plots", default="plots/benchmark")
    args = parser.parse_args()

    ctx = setup(args.data)
    models = Path(args.models)
    machine = bench.machine()
    with tempfile.TemporaryDirectory() as members:  # an ensemble teacher's members, saved for the loop
        measured = [*artifacts.present(models), *benchmark.teacher_members(models, Path(members))]
        results, probabilities = benchmark.measure_all(ctx, measured, models, machine["cpu_count"])
    report = benchmark.report(ctx, results, machine)
    write_benchmark_plots(Path(args.plots), ctx.task, ctx.splits["test"][1], measured, results, probabilities)
    write_json(args.metrics, report)
    write_json(args.headline, artifacts.headline(results))


if __name__ == "__main__":
    run(main)
