"""Compare experiments across seeds: which recipe differs from which, and with what evidence.

    dvc exp run --queue -S seed=43 && dvc exp run --queue -S seed=44 && dvc queue start
    python -m lib.compare [--exps FILE ...] [--exclude RUN ...] [--no-commits] [--baseline RECIPE_OR_EXP]
                          [--metric int8_tflite.acc ...] [--pair teacher_torch int8_tflite ...]
                          [--md OUT.md] [--plot OUT.png] [--json OUT.json]
                          [--mcnemar-from EARLIER.json|EARLIER.md] [--grid LEVER.yaml ...]

Several `--exps` files are read as one, in their order. Runs made on another machine must not pair with this
machine's (the same seed gives other figures on another CPU): `--exclude` leaves runs out by name and
`--no-commits` the commits' own results, both before a (recipe, seed) picks its run.

A *recipe* is an experiment's params without `seed`; its runs are the seeds. The baseline recipe is called
`default`: the recipe of the workspace's params.yaml where some runs have it, else the commit's, or the one
`--baseline` names. Every other recipe is named by the params it changes. For every recipe the report gives mean ±
sample std of the headline metrics; each recipe is compared with the baseline by a paired test over the seeds
both ran (exact Wilcoxon signed-rank and a bootstrap CI of the mean difference); within every run, two
artifacts are compared image by image with an exact McNemar test on the test predictions. With `--grid`, only
the cells of the given grid files (lib.grid) and the runs of params.yaml's recipe at their seeds are compared,
whatever else the repository's experiments hold.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from lib.artifacts import DEPLOYED, TEACHER, headline_metric
from lib import cli, render
from lib.errors import UserError
from lib.exps import (DEFAULT_RECIPE, HEADLINE, PREDICTIONS, Run, collect_runs, correct_by_artifact, default_recipe,
                      differences, load_exp_shows, portable, read_predictions, recipe_labels, varying_keys,
                      workspace_recipe)
from lib.grid import Grid, load_grid
from lib.io import atomic_path, write_json
from lib.pareto import is_cell
from lib.stats import mcnemar, paired_test, summary

DEFAULT_METRICS = [headline_metric(artifact, key) for artifact, key in (
    (DEPLOYED, "acc"), (DEPLOYED, "auc"), (DEPLOYED, "kb"), (DEPLOYED, "ms"), ("qat_tflite", "acc"),
    ("qat_tflite", "auc"), (TEACHER, "acc"), ("student_torch", "acc"), ("pruned_torch", "acc"),
    ("pruned_torch", "auc"))]
DEFAULT_PAIRS = [(TEACHER, DEPLOYED), ("pruned_torch", DEPLOYED), ("student_torch", "pruned_torch")]


def valid_metrics(runs: list[Run]) -> list[str]:
    """Every `<artifact>.<metric>` any run has, in the order the headline file lists them."""
    return list(dict.fromkeys(k for r in runs for k in r.metrics))


def check_metrics(wanted: list[str], runs: list[Run]) -> None:
    unknown = [m for m in wanted if m not in valid_metrics(runs)]
    if unknown:
        raise UserError(f"--metric: unknown {', '.join(unknown)}; valid names: {', '.join(valid_metrics(runs))}")


def pick_baseline(choice: str | None, runs: list[Run], current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The params of the recipe to compare others with, chosen by its name among all recipes or by an
    experiment's name; default the recipe whose params are `current` (params.yaml's), else the commit's."""
    if choice is None:
        return default_recipe(runs, current)
    labels = recipe_labels(runs)
    for run, label in zip(runs, labels):
        if choice in (label, run.name):
            return run.params
    raise UserError(f"--baseline: {choice!r} is neither a recipe nor an experiment; recipes: "
                    f"{'; '.join(dict.fromkeys(labels))}; experiments: {', '.join(r.name for r in runs)}")


def paired_tests(recipes: dict[str, list[Run]], metrics: list[str]) -> list[dict]:
    """Every other recipe minus the baseline (`default`), paired by seed, for every chosen metric."""
    by_seed = {r.seed: r for r in recipes[DEFAULT_RECIPE]}
    tests = []
    for recipe, runs in recipes.items():
        if recipe == DEFAULT_RECIPE:
            continue
        pairs = [(by_seed[r.seed], r) for r in runs if r.seed in by_seed]
        for metric in metrics:
            diffs = [other.metrics.get(metric, math.nan) - base.metrics.get(metric, math.nan)
                     for base, other in pairs]
            tests.append({"recipe": recipe, "metric": metric, "seeds": [o.seed for _, o in pairs],
                          **paired_test(diffs)})
    return tests


def earlier_mcnemar(path: Path) -> dict[tuple[str, str], list[dict]]:
    """An earlier report's McNemar tests by (run, seed as text): from its JSON, or from its Markdown's table."""
    if not path.is_file():
        raise UserError(f"--mcnemar-from: file {path} not found; give an earlier compare.json or compare.md")
    text = path.read_text()
    rows = json.loads(text)["mcnemar"] if path.suffix == ".json" else render.mcnemar_rows(text)
    found: dict[tuple[str, str], list[dict]] = {}
    for t in rows:
        found.setdefault((t["run"], str(t["seed"])), []).append(
            {"first": t["first"], "second": t["second"], "b": int(t["b"]), "c": int(t["c"]), "p": float(t["p"])})
    return found


def _carried_note(names: list[str], earlier: Path) -> str:
    return (f"McNemar of {', '.join(names)}: not recomputed, as {PREDICTIONS} of these runs is not in this "
            f"repository; carried over from {earlier}, which computed them while the runs' experiment refs were "
            "present (b, c and p belong to each run, whatever the baseline)")


def mcnemar_per_run(runs: list[Run], pairs: list[tuple[str, str]], repo: Path,
                    earlier: Path | None = None) -> tuple[list[dict], list[str]]:
    """McNemar tests of every pair of artifacts in every run whose predictions this repository holds; of a run
    whose predictions it does not hold, the tests that the report `earlier` has of it, marked `carried`."""
    tests, notes, carried = [], [], []
    previous = earlier_mcnemar(earlier) if earlier is not None else {}
    for run in runs:
        text = read_predictions(run.rev, repo)
        if text is None:
            old = [t for t in previous.get((run.name, str(run.seed)), []) if (t["first"], t["second"]) in pairs]
            tests += [{"run": run.name, "seed": run.seed, **t, "carried": True} for t in old]
            carried += [run.name] if old else []
            notes += [] if old else [f"McNemar: no {PREDICTIONS} for {run.name} in this repository"]
            continue
        correct = correct_by_artifact(text)
        for first, second in pairs:
            missing = [a for a in (first, second) if a not in correct]
            if missing:
                notes.append(f"McNemar: {run.name} has no predictions of {', '.join(missing)} "
                             f"(has {', '.join(sorted(correct))})")
                continue
            tests.append({"run": run.name, "seed": run.seed, "first": first, "second": second,
                          **mcnemar(correct[first], correct[second])})
    return tests, notes + ([_carried_note(carried, earlier)] if carried else [])


def in_grids(run: Run, grids: list[Grid], current: dict[str, Any]) -> bool:
    """Whether a run is a cell of one of `grids` on top of `current` (params.yaml's recipe), or a run of
    `current` itself at one of their seeds."""
    return any(is_cell(run, grid, current) or is_cell(run, Grid({}, grid.seeds), current) for grid in grids)


def _seed_order(run: Run) -> tuple:
    """Numeric seeds in numeric order (42 before 100), anything else after them as text."""
    numeric = isinstance(run.seed, (int, float)) and not isinstance(run.seed, bool)
    return (not numeric, run.seed if numeric else str(run.seed))


def compare(shown: list, metrics: list[str] | None = None, baseline: str | None = None,
            pairs: list[tuple[str, str]] | None = None, repo: Path = Path("."),
            metrics_file: str = HEADLINE, mcnemar_from: Path | None = None,
            grids: list[Grid] | None = None, excluded: list[str] | None = None, commits: bool = True) -> dict:
    """The whole comparison as one JSON-ready mapping (the Markdown and the plot are drawn from it).

    `repo` holds the predictions of the McNemar tests and the params.yaml whose recipe is the default baseline.
    """
    found = collect_runs(shown, metrics_file, excluded or (), commits)
    runs = sorted(found.runs, key=_seed_order)
    current = workspace_recipe(repo)
    notes = list(found.notes)
    if grids:
        if current is None:
            raise UserError("--grid: params.yaml not found; a grid's cells are changes to its recipe")
        runs = [r for r in runs if in_grids(r, grids, current)]
        if not runs:
            raise UserError("--grid: no finished run is a cell of the grids or params.yaml's recipe at their seeds")
        left_out = len(found.runs) - len(runs)
        notes += [f"left out {left_out} finished run(s) that are neither cells of the grids nor "
                  "params.yaml's recipe at their seeds"] * bool(left_out)
    base = pick_baseline(baseline, runs, current)
    labels = recipe_labels(runs, base)
    recipes: dict[str, list[Run]] = {DEFAULT_RECIPE: []}  # the baseline first
    for run, label in zip(runs, labels):
        recipes.setdefault(label, []).append(run)
    metrics = metrics or [m for m in DEFAULT_METRICS if m in valid_metrics(runs)] or valid_metrics(runs)
    check_metrics(metrics, runs)
    pairs = [tuple(p) for p in pairs or DEFAULT_PAIRS]
    mcnemar_tests, mcnemar_notes = mcnemar_per_run(runs, pairs, repo, mcnemar_from)
    recipe_of = {run.name: label for run, label in zip(runs, labels)}
    return {
        "baseline": DEFAULT_RECIPE,
        "baseline_params": {key: base.get(key) for key in varying_keys(r.params for r in runs)},
        "baseline_vs_params_yaml": differences(base, current),
        "metrics": metrics,
        "recipes": {recipe: {
            "runs": [{"name": r.name, "rev": r.rev, "seed": r.seed} for r in members],
            "summary": {m: summary([r.metrics.get(m, math.nan) for r in members]) for m in valid_metrics(runs)},
        } for recipe, members in recipes.items()},
        "paired": paired_tests(recipes, metrics),
        "mcnemar": [{**t, "recipe": recipe_of[t["run"]]} for t in mcnemar_tests],
        "notes": notes + mcnemar_notes,
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exps", action="append", help="`dvc exp show --json` output (repeatable: read as one, "
                        "in order); default: run it in the current repository")
    parser.add_argument("--exclude", action="append", metavar="RUN", help="leave out the run of this experiment "
                        "name, commit name or rev (7+ characters) from the comparison and from --save-exps "
                        "(repeatable)")
    parser.add_argument("--no-commits", dest="commits", action="store_false", help="leave out the commits' and "
                        "the workspace's own results, from the comparison and from --save-exps: only `dvc exp` "
                        "experiments, e.g. when the commits' run was made on another machine")
    parser.add_argument("--metric", action="append", help="`<artifact>.<metric>` to tabulate and test "
                        "(repeatable); default: int8 TFLite quality, size and latency, teacher/student/pruned quality")
    parser.add_argument("--baseline", help="recipe or experiment name to compare others with (then called "
                        "`default`); default: the recipe of params.yaml where some runs have it, else the "
                        "current commit's")
    parser.add_argument("--pair", nargs=2, action="append", metavar=("FIRST", "SECOND"),
                        help="two artifacts for the McNemar test (repeatable); default: "
                        + ", ".join(f"{a} vs {b}" for a, b in DEFAULT_PAIRS))
    parser.add_argument("--metrics-file", default=HEADLINE,
                        help=f"the metrics file whose numeric leaves are compared (default {HEADLINE})")
    parser.add_argument("--save-exps", help="also save the experiments read, without this machine's executor "
                        "details and the excluded runs, so the report can be rebuilt elsewhere with --exps")
    parser.add_argument("--mcnemar-from", type=Path, help="an earlier report (its .json, or its .md) whose "
                        "McNemar tests of a run are kept where this repository lacks the run's predictions, e.g. "
                        "its experiment refs are gone; the notes list the runs carried over")
    parser.add_argument("--grid", action="append", type=Path, help="compare only the cells of this grid file "
                        "(as lib.search reads it) and params.yaml's recipe at its seeds (repeatable)")
    parser.add_argument("--md", help="write the Markdown report here instead of stdout")
    parser.add_argument("--json", help="also write the report as JSON")
    parser.add_argument("--plot", help="write a PNG of --plot-metric per artifact and recipe")
    parser.add_argument("--plot-metric", default="acc", help="metric name without artifact (default acc)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    shown = load_exp_shows(args.exps)
    report = compare(shown, args.metric, args.baseline, args.pair, metrics_file=args.metrics_file,
                     mcnemar_from=args.mcnemar_from, grids=[load_grid(path) for path in args.grid or []],
                     excluded=args.exclude, commits=args.commits)
    if args.save_exps:  # after the comparison, which rejects an --exclude that names no run
        write_json(args.save_exps, portable(shown, args.exclude or (), args.commits))
    if args.plot:
        render.plot(report, args.plot_metric, args.plot)
    if args.json:
        write_json(args.json, report)
    if args.md:
        with atomic_path(args.md) as tmp:
            tmp.write_text(render.markdown(report))
    else:
        print(render.markdown(report))


if __name__ == "__main__":
    cli.run(main)
