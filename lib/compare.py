"""Compare experiments across seeds: which recipe differs from which, and with what evidence.

    dvc exp run --queue -S seed=43 && dvc exp run --queue -S seed=44 && dvc queue start
    python -m lib.compare [--exps FILE] [--metric int8_tflite.acc ...] [--baseline RECIPE_OR_EXP]
                          [--pair teacher_torch int8_tflite ...] [--md OUT.md] [--plot OUT.png] [--json OUT.json]

A *recipe* is an experiment's params without `seed`; its runs are the seeds. For every recipe the report
gives mean ± sample std of the headline metrics; each recipe is compared with the baseline recipe by a paired
test over the seeds both ran (exact Wilcoxon signed-rank and a bootstrap CI of the mean difference); within
every run, two artifacts are compared image by image with an exact McNemar test on the test predictions.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lib import cli
from lib.errors import UserError
from lib.io import atomic_path, write_json

HEADLINE = "metrics/headline.json"
PREDICTIONS = "plots/benchmark/predictions.csv"
WORKSPACE = "workspace"
DEFAULT_METRICS = ["int8_tflite.acc", "int8_tflite.auc", "int8_tflite.kb", "int8_tflite.ms", "qat_tflite.acc",
                   "qat_tflite.auc", "teacher_torch.acc", "student_torch.acc", "pruned_torch.acc", "pruned_torch.auc"]
DEFAULT_PAIRS = [("teacher_torch", "int8_tflite"), ("pruned_torch", "int8_tflite"),
                 ("student_torch", "pruned_torch")]
ALPHA = 0.05
FLOAT_NOISE_DECIMALS = 12  # paired differences are rounded here: 0.7 - 0.6999999999999999 is a tie, not a win
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass
class Run:
    """One finished run: its recipe params (seed removed), its seed and its numeric headline metrics."""

    name: str
    rev: str
    seed: Any
    params: dict[str, Any]
    metrics: dict[str, float]
    is_commit: bool = False  # a baseline commit (or the workspace), not a `dvc exp` experiment
    recipe: str = ""


@dataclass
class Experiments:
    runs: list[Run]
    notes: list[str] = field(default_factory=list)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → {"a.b.c": leaf}."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """Every numeric leaf as `<artifact>.<metric>`; a null (e.g. AUC of a one-class split) becomes NaN."""
    flat = flatten(metrics)
    return {key: math.nan if value is None else float(value) for key, value in flat.items()
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))}


def load_exp_show(path: str | Path | None = None) -> list:
    """The JSON of `dvc exp show --json`: read from `path`, or run in the current repository."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--exps: file {path} not found; write one with `dvc exp show --json > {path}`")
        text = path.read_text()
    else:
        try:
            result = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        except FileNotFoundError as err:
            raise UserError("`dvc` is not on PATH; install DVC or pass --exps FILE") from err
        if result.returncode != 0:
            raise UserError(f"`dvc exp show --json` failed: {result.stderr.strip()}; "
                            "run inside the DVC repository or pass --exps FILE")
        text = result.stdout
    try:
        shown = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"the experiments JSON is not valid JSON ({err}); expected `dvc exp show --json` output") \
            from err
    if not isinstance(shown, list):
        raise UserError(f"the experiments JSON is a {type(shown).__name__}; expected the list that "
                        "`dvc exp show --json` (DVC 3) writes")
    return shown


def portable(shown: list) -> list:
    """`dvc exp show --json` without each queued run's local executor record (its log path and pid on the
    machine that ran it); the executor's state, which the comparison reads, is kept."""
    shown = copy.deepcopy(shown)
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            (exp.get("executor") or {}).pop("local", None)
    return shown


def experiment_entries(shown: list) -> list[tuple[dict, str | None, bool]]:
    """(rev entry, executor state, is a commit) for the workspace, every baseline commit and every experiment."""
    entries = []
    for baseline in shown:
        entries.append((baseline, None, True))
        for exp in baseline.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            entries += [(rev, state, False) for rev in exp.get("revs") or []]
    return entries


def _run_from(entry: dict, state: str | None, is_commit: bool, metrics_file: str) -> Run | str:
    """A Run, or the reason this entry is not one."""
    name = entry.get("name") or entry["rev"][:7]
    if state not in (None, "success"):
        return f"skipped {name}: {state}"
    data = entry.get("data")
    if entry.get("error") or not data:
        msg = (entry.get("error") or {}).get("msg", "no data")
        return f"skipped {name}: {msg}"
    metrics = (data.get("metrics") or {}).get(metrics_file, {}).get("data")
    if not metrics:
        return f"skipped {name}: no {metrics_file}"
    params = {}
    for file, content in (data.get("params") or {}).items():
        prefix = "" if file == "params.yaml" else f"{file}:"
        params.update(flatten(content.get("data") or {}, prefix))
    seed = params.pop("seed", None)
    return Run(name=name, rev=entry["rev"], seed=seed, params=params, metrics=numeric_metrics(metrics),
               is_commit=is_commit)


def collect_runs(shown: list, metrics_file: str = HEADLINE) -> Experiments:
    """Finished runs with headline metrics, one per (recipe params, seed), so no seed is counted twice.

    A clean workspace repeats the run of its commit: the commit is kept, since `git show` can read its files.
    Otherwise the first run of a (recipe, seed) is kept: the workspace, then commits, then experiments.
    """
    notes = []
    kept: dict[str, Run] = {}
    for entry, state, is_commit in experiment_entries(shown):
        run = _run_from(entry, state, is_commit, metrics_file)
        if isinstance(run, str):
            notes.append(run)
            continue
        key = json.dumps([run.params, run.seed], sort_keys=True)
        earlier = kept.get(key)
        if earlier is None or (earlier.rev == WORKSPACE and _same_metrics(earlier, run)):
            kept[key] = run
        else:
            notes.append(f"skipped {run.name}: same params and seed as {earlier.name}")
    if not kept:
        raise UserError(f"no finished experiment with {metrics_file} ({'; '.join(notes) or 'none listed'}); "
                        "run the pipeline or queue seeds with `dvc exp run --queue -S seed=43` and `dvc queue start`")
    return Experiments(runs=list(kept.values()), notes=notes)


def _same_metrics(a: Run, b: Run) -> bool:
    return json.dumps(a.metrics, sort_keys=True) == json.dumps(b.metrics, sort_keys=True)


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def label_recipes(runs: list[Run], baseline: dict[str, Any] | None = None) -> list[str]:
    """Name each run's recipe by the params that differ between recipes; returns the labels in first-seen order.

    With `baseline` (a recipe's params), the baseline keeps that full name and every other recipe is named by
    what it changes, e.g. `prune.iterative_steps=5`: the `-S` flags that made it.
    """
    keys = sorted({k for r in runs for k in r.params})
    varying = [k for k in keys if len({json.dumps(r.params.get(k)) for r in runs}) > 1]
    for run in runs:
        shown = [k for k in varying if baseline is None or run.params == baseline
                 or json.dumps(run.params.get(k)) != json.dumps(baseline.get(k))]
        run.recipe = ", ".join(f"{k}={_label(run.params.get(k))}" for k in shown) or "all runs"
    return list(dict.fromkeys(r.recipe for r in runs))


def valid_metrics(runs: list[Run]) -> list[str]:
    """Every `<artifact>.<metric>` any run has, in the order the headline file lists them."""
    return list(dict.fromkeys(k for r in runs for k in r.metrics))


def check_metrics(wanted: list[str], runs: list[Run]) -> None:
    unknown = [m for m in wanted if m not in valid_metrics(runs)]
    if unknown:
        raise UserError(f"--metric: unknown {', '.join(unknown)}; valid names: {', '.join(valid_metrics(runs))}")


def summary(values: list[float]) -> dict:
    """n, mean and sample standard deviation (ddof=1) of the finite values."""
    finite = np.array([v for v in values if not math.isnan(v)])
    n = len(finite)
    return {"n": n, "mean": float(finite.mean()) if n else None,
            "std": float(finite.std(ddof=1)) if n > 1 else None}


def smallest_wilcoxon_p(n: int) -> float:
    """The exact two-sided Wilcoxon p when all n differences share a sign: 2 / 2**n (0.0625 at n = 5)."""
    return min(1.0, 2.0 / 2 ** n)


def paired_test(differences: list[float]) -> dict:
    """Exact Wilcoxon signed-rank and a percentile-bootstrap 95% CI of the mean paired difference."""
    diffs = np.round([d for d in differences if not math.isnan(d)], FLOAT_NOISE_DECIMALS)
    n = len(diffs)
    result = {"n": n, "mean_diff": float(diffs.mean()) if n else None, "ci95": None, "p": None,
              "can_reach_alpha": smallest_wilcoxon_p(n) < ALPHA}
    if n >= 2:
        ci = stats.bootstrap((diffs,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                             rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
        result["ci95"] = [float(ci.low), float(ci.high)]
    if n >= 1:
        result["p"] = 1.0 if not diffs.any() else float(stats.wilcoxon(diffs, method="exact").pvalue)
    return result


def mcnemar(first_correct: np.ndarray, second_correct: np.ndarray) -> dict:
    """Exact McNemar: a two-sided binomial test on the images exactly one of the two artifacts got right.

    b = first right and second wrong, c = first wrong and second right.
    """
    b = int(np.sum(first_correct & ~second_correct))
    c = int(np.sum(~first_correct & second_correct))
    p = float(stats.binomtest(c, b + c).pvalue) if b + c else 1.0
    return {"b": b, "c": c, "p": p}


def read_predictions(rev: str, repo: Path = Path(".")) -> str | None:
    """The benchmark's predictions CSV of a run: the file for the workspace, `git show` for a revision."""
    if rev == WORKSPACE:
        path = repo / PREDICTIONS
        return path.read_text() if path.is_file() else None
    result = subprocess.run(["git", "show", f"{rev}:{PREDICTIONS}"], cwd=repo, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def correct_by_artifact(csv_text: str) -> dict[str, np.ndarray]:
    """Artifact → boolean array 'prediction == label', ordered by test image index."""
    rows: dict[str, list[tuple[int, bool]]] = {}
    for row in csv.DictReader(io.StringIO(csv_text)):
        rows.setdefault(row["artifact"], []).append((int(row["index"]), row["label"] == row["predicted"]))
    return {name: np.array([ok for _, ok in sorted(pairs)]) for name, pairs in rows.items()}


def mcnemar_per_run(runs: list[Run], pairs: list[tuple[str, str]], repo: Path) -> tuple[list[dict], list[str]]:
    tests, notes = [], []
    for run in runs:
        text = read_predictions(run.rev, repo)
        if text is None:
            notes.append(f"McNemar: no {PREDICTIONS} for {run.name} in this repository")
            continue
        correct = correct_by_artifact(text)
        for first, second in pairs:
            missing = [a for a in (first, second) if a not in correct]
            if missing:
                notes.append(f"McNemar: {run.name} has no predictions of {', '.join(missing)} "
                             f"(has {', '.join(sorted(correct))})")
                continue
            tests.append({"run": run.name, "recipe": run.recipe, "seed": run.seed, "first": first,
                          "second": second, **mcnemar(correct[first], correct[second])})
    return tests, notes


def pick_baseline(choice: str | None, runs: list[Run], recipes: list[str]) -> str:
    """The recipe to compare others with: given by label or experiment name; default the current commit's."""
    if choice is None:
        return next((r.recipe for r in runs if r.is_commit), recipes[0])
    if choice in recipes:
        return choice
    for run in runs:
        if run.name == choice:
            return run.recipe
    raise UserError(f"--baseline: {choice!r} is neither a recipe nor an experiment; recipes: "
                    f"{'; '.join(recipes)}; experiments: {', '.join(r.name for r in runs)}")


def paired_tests(runs: list[Run], recipes: list[str], baseline: str, metrics: list[str]) -> list[dict]:
    """Every other recipe minus the baseline, paired by seed, for every chosen metric."""
    by_seed = {r.seed: r for r in runs if r.recipe == baseline}
    tests = []
    for recipe in recipes:
        if recipe == baseline:
            continue
        pairs = [(by_seed[r.seed], r) for r in runs if r.recipe == recipe and r.seed in by_seed]
        for metric in metrics:
            diffs = [other.metrics.get(metric, math.nan) - base.metrics.get(metric, math.nan)
                     for base, other in pairs]
            tests.append({"recipe": recipe, "metric": metric, "seeds": [o.seed for _, o in pairs],
                          **paired_test(diffs)})
    return tests


def _seed_order(run: Run) -> tuple:
    """Numeric seeds in numeric order (42 before 100), anything else after them as text."""
    numeric = isinstance(run.seed, (int, float)) and not isinstance(run.seed, bool)
    return (not numeric, run.seed if numeric else str(run.seed))


def compare(shown: list, metrics: list[str] | None = None, baseline: str | None = None,
            pairs: list[tuple[str, str]] | None = None, repo: Path = Path("."),
            metrics_file: str = HEADLINE) -> dict:
    """The whole comparison as one JSON-ready mapping (the Markdown and the plot are drawn from it)."""
    found = collect_runs(shown, metrics_file)
    runs = sorted(found.runs, key=_seed_order)
    base = pick_baseline(baseline, runs, label_recipes(runs))
    recipes = label_recipes(runs, next(r.params for r in runs if r.recipe == base))  # the baseline keeps its name
    metrics = metrics or [m for m in DEFAULT_METRICS if m in valid_metrics(runs)] or valid_metrics(runs)
    check_metrics(metrics, runs)
    mcnemar_tests, mcnemar_notes = mcnemar_per_run(runs, pairs or DEFAULT_PAIRS, repo)
    return {
        "baseline": base,
        "metrics": metrics,
        "recipes": {recipe: {
            "runs": [{"name": r.name, "rev": r.rev, "seed": r.seed} for r in runs if r.recipe == recipe],
            "summary": {m: summary([r.metrics.get(m, math.nan) for r in runs if r.recipe == recipe])
                        for m in valid_metrics(runs)},
        } for recipe in recipes},
        "paired": paired_tests(runs, recipes, base, metrics),
        "mcnemar": mcnemar_tests,
        "notes": found.notes + mcnemar_notes,
    }


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{round(value, FLOAT_NOISE_DECIMALS):.4g}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows], ""]


def _mean_std(s: dict) -> str:
    """Mean to 4 significant digits, the std to 2: the spread is what says how many of those digits count."""
    if not s["n"]:
        return "n/a"
    return f"{_num(s['mean'])} ± " + ("n/a" if s["std"] is None else f"{round(s['std'], FLOAT_NOISE_DECIMALS):.2g}")


def _difference(t: dict) -> str:
    """A paired cell: mean difference, its bootstrap CI and the exact Wilcoxon p."""
    if not t["n"]:
        return "n/a"
    ci = f" [{_num(t['ci95'][0])}, {_num(t['ci95'][1])}]" if t["ci95"] else ""
    return f"{round(t['mean_diff'], FLOAT_NOISE_DECIMALS):+.4g}{ci}, p {_p(t['p'])}"


def markdown(report: dict) -> str:
    recipes = report["recipes"]
    lines = ["# Experiments compared across seeds", ""]
    lines += _table(["recipe", "runs", "seeds", "experiments"],
                    [[f"`{name}`" + (" (baseline)" if name == report["baseline"] else ""), str(len(r["runs"])),
                      ", ".join(str(x["seed"]) for x in r["runs"]), ", ".join(x["name"] for x in r["runs"])]
                     for name, r in recipes.items()])
    metrics = report["metrics"]
    lines += ["## Mean ± sample std over seeds", ""]
    lines += _table(["recipe", *[f"`{m}`" for m in metrics]],
                    [[f"`{name}`", *[_mean_std(r["summary"][m]) for m in metrics]] for name, r in recipes.items()])
    lines += [f"## Paired by seed: recipe − baseline `{report['baseline']}`", ""]
    if report["paired"]:
        lines += ["Each cell: mean difference over the seeds both recipes ran, its 95 % bootstrap CI and the exact "
                  "Wilcoxon signed-rank p.", ""]
        cells = {(t["recipe"], t["metric"]): t for t in report["paired"]}
        others = list(dict.fromkeys(t["recipe"] for t in report["paired"]))
        lines += _table(["recipe", "seeds", *[f"`{m}`" for m in metrics]],
                        [[f"`{name}`", ", ".join(map(str, cells[name, metrics[0]]["seeds"])),
                          *[_difference(cells[name, m]) for m in metrics]] for name in others])
        small = sorted({t["n"] for t in report["paired"] if not t["can_reach_alpha"]})
        if small:
            lines += [f"With n = {', '.join(map(str, small))} paired seeds the exact two-sided Wilcoxon test can "
                      f"never reach p < {ALPHA} (its smallest p is 2/2^n, 0.0625 at n = 5): a large p here means "
                      "too few seeds, not no difference. Queue at least 6 seeds per recipe.", ""]
    else:
        lines += ["Only one recipe: nothing to pair.", ""]
    lines += ["## McNemar (exact) per run, test predictions", "",
              "b = first artifact right and second wrong, c = the reverse; p = two-sided binomial test on b + c.", ""]
    if report["mcnemar"]:
        lines += _table(["run", "recipe", "seed", "first", "second", "b", "c", "p"],
                        [[t["run"], f"`{t['recipe']}`", str(t["seed"]), f"`{t['first']}`", f"`{t['second']}`",
                          str(t["b"]), str(t["c"]), _p(t["p"])] for t in report["mcnemar"]])
    else:
        lines += [f"No run's {PREDICTIONS} could be read (see the notes).", ""]
    if report["notes"]:
        lines += ["## Notes", "", *[f"- {note}" for note in report["notes"]], ""]
    return "\n".join(lines)


def artifacts_with(report: dict, metric: str) -> list[str]:
    """The artifacts that have `metric` (e.g. 'acc') in some recipe, in headline order."""
    keys = [key for r in report["recipes"].values() for key, s in r["summary"].items() if s["n"]]
    found = list(dict.fromkeys(key.rpartition(".")[0] for key in keys if key.rpartition(".")[2] == metric))
    if not found:
        raise UserError(f"--plot-metric: no artifact has {metric!r}; valid: "
                        f"{', '.join(sorted({key.rpartition('.')[2] for key in keys}))}")
    return found


def plot(report: dict, metric: str, out: str | Path) -> None:
    """Mean ± std error bars of `metric` for every artifact, one series per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    artifacts = artifacts_with(report, metric)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(artifacts)), 4))
    width = 0.8 / len(report["recipes"])
    for i, (name, recipe) in enumerate(report["recipes"].items()):
        cells = [recipe["summary"].get(f"{a}.{metric}", {"mean": None, "std": None}) for a in artifacts]
        x = np.arange(len(artifacts)) + (i - (len(report["recipes"]) - 1) / 2) * width
        mean = [np.nan if c["mean"] is None else c["mean"] for c in cells]
        std = [c["std"] or 0.0 for c in cells]
        ax.errorbar(x, mean, yerr=std, fmt="o", capsize=3, label=f"{name} (n={len(recipe['runs'])})")
    ax.set_xticks(np.arange(len(artifacts)), artifacts, rotation=30, ha="right")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exps", help="`dvc exp show --json` output; default: run it in the current repository")
    parser.add_argument("--metric", action="append", help="`<artifact>.<metric>` to tabulate and test "
                        "(repeatable); default: int8 TFLite quality, size and latency, teacher/student/pruned quality")
    parser.add_argument("--baseline", help="recipe label or experiment name to compare others with; "
                        "default: the recipe of the current commit")
    parser.add_argument("--pair", nargs=2, action="append", metavar=("FIRST", "SECOND"),
                        help="two artifacts for the McNemar test (repeatable); default: "
                        + ", ".join(f"{a} vs {b}" for a, b in DEFAULT_PAIRS))
    parser.add_argument("--metrics-file", default=HEADLINE,
                        help=f"the metrics file whose numeric leaves are compared (default {HEADLINE})")
    parser.add_argument("--save-exps", help="also save the experiments read, without this machine's executor "
                        "details, so the report can be rebuilt elsewhere with --exps")
    parser.add_argument("--md", help="write the Markdown report here instead of stdout")
    parser.add_argument("--json", help="also write the report as JSON")
    parser.add_argument("--plot", help="write a PNG of --plot-metric per artifact and recipe")
    parser.add_argument("--plot-metric", default="acc", help="metric name without artifact (default acc)")
    args = parser.parse_args(argv)

    shown = load_exp_show(args.exps)
    if args.save_exps:
        write_json(args.save_exps, portable(shown))
    report = compare(shown, args.metric, args.baseline,
                     [tuple(p) for p in args.pair] if args.pair else None, metrics_file=args.metrics_file)
    if args.plot:
        plot(report, args.plot_metric, args.plot)
    if args.json:
        write_json(args.json, report)
    if args.md:
        with atomic_path(args.md) as tmp:
            tmp.write_text(markdown(report))
    else:
        print(markdown(report))


if __name__ == "__main__":
    cli.run(main)
