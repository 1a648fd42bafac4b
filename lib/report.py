"""The results table of `metrics/benchmark.json` and the generated blocks of the docs, each line ≤ 120 columns.

    python -m lib.report                 # print the table (what `make repro` ends with)
    python -m lib.report --write         # rewrite every generated block in its file (BLOCK_FILES)
    python -m lib.report --experiments   # `dvc exp show`, narrowed to the headline figures (`make exps`)

The tables are generated from the metrics of real runs, never typed by hand. A block is the text between
`<!-- name:start -->` and `<!-- name:end -->`: `results` and `search` (the Pareto front of `make search`) in
README.md, `seeds` (the multi-seed comparison) in docs/recipes.md, `students` in docs/students.md, `pruning`
(structured vs unstructured over seeds) in docs/pruning.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from pathlib import Path

from lib import cli
from lib.artifacts import DECISIONS, DEPLOYED, headline_metric, measured
from lib.errors import UserError
from lib.exps import (DEFAULT_RECIPE, collect_runs, default_recipe, differences, load_exp_show, recipe_labels,
                      varying_keys, varying_params, workspace_recipe)
from lib.io import atomic_path, read_json
from lib.render import fitted, mean_difference, mean_std, p_value, recipe_note, small_n_warning, wrapped

RESULTS_BLOCK, SEEDS_BLOCK, STUDENTS_BLOCK, SEARCH_BLOCK = "results", "seeds", "students", "search"
PRUNING_BLOCK = "pruning"
BLOCK_FILES = {RESULTS_BLOCK: Path("README.md"), PRUNING_BLOCK: Path("docs/pruning.md"),
               SEEDS_BLOCK: Path("docs/recipes.md"), STUDENTS_BLOCK: Path("docs/students.md"),
               SEARCH_BLOCK: Path("README.md")}  # the file that holds each generated block
BENCHMARK = Path("metrics/benchmark.json")
SEEDS_MD = "plots/compare/compare.md"  # the whole comparison, written by `make compare` (lib.compare)
SEEDS_REPORT = Path("plots/compare/compare.json")  # the same as data, which the seeds block shows in part
STUDENTS_EXPS = Path("plots/students/experiments.json")  # `dvc exp show --json` of the students, `make students`
SEARCH_FRONT = Path("plots/search/front.md")  # the Pareto front's table, written by `make search` (lib.search)
NO_SEARCH = "No search in this commit yet: `make search` runs the grid of search.yaml and fills this table."
COLUMNS = {  # headline key → (column, format) of the compact tables of the blocks
    "student_torch.acc": ("student acc", ".3f"), "pruned_torch.acc": ("pruned acc", ".3f"),
    "int8_tflite.acc": ("INT8 acc", ".3f"), "int8_tflite.auc": ("INT8 AUC", ".3f"),
    "int8_tflite.kb": ("INT8 KiB", ",.0f"), "int8_tflite.mmacs": ("MMACs", ".2f"),
    "int8_tflite.ms": ("INT8 ms", ".3f")}
SEEDS_METRICS = ["int8_tflite.acc", "int8_tflite.auc", "pruned_torch.acc"]  # the rest is in SEEDS_MD
PRUNING_REPORT = Path("plots/pruning/compare.json")  # structured vs unstructured pruning over seeds (lib.compare)
PRUNING_METRICS = ["int8_tflite.acc", "int8_tflite.auc", "int8_tflite.kb", "int8_tflite.ms"]
SECTION = re.compile(r"(^|, )[a-z_]+[.]")  # the section of each key of a recipe's name (`prune.ratio=…`)

# `dvc exp show` lists every param, every dependency's hash and every metric: hundreds of columns. The
# narrowed table keeps the figures a person compares first, plus the params that differ between experiments.
HEADLINE_COLUMNS = r"^(teacher_torch|student_torch|pruned_torch|int8_tflite)\.acc$|^int8_tflite\.(auc|kb|ms)$"


def _ci(value: float, ci: list[float] | None) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _rate(value: float | None) -> str:
    """A sensitivity, or n/a where the test split holds no image of the class or label."""
    return "n/a" if value is None else f"{value:.3f}"


def _quality(bench: dict, artifacts: list[str]) -> list[str]:
    classes = list(bench[artifacts[0]]["test"]["per_class"])
    header = ["artifact", "accuracy [95% CI]", "AUC [95% CI]", "macro F1", *[f"sensitivity {c}" for c in classes],
              "ECE"]
    rows = [[f"`{name}`", _ci(t["accuracy"], t["ci95"]["accuracy"]),
             _ci(t["auc"], t["ci95"]["auc"]) if t["auc"] is not None else "n/a", f"{t['f1_macro']:.3f}",
             *[_rate(t["per_class"][c]["sensitivity"]) for c in classes], f"{t['ece']:.3f}"]
            for name, t in ((name, bench[name]["test"]) for name in artifacts)]
    return fitted(header, rows)


def _cost(bench: dict, artifacts: list[str]) -> list[str]:
    header = ["artifact", "size (KiB)", "params", "MMACs",
              f"latency p50 ({bench[artifacts[0]]['latency_ms']['threads']} thread, ms)", "smaller ×", "faster ×"]
    rows = [[f"`{name}`", f"{r['size_bytes'] / 1024:,.0f}", f"{r['params']:,}", f"{r['macs'] / 1e6:,.1f}",
             f"{r['latency_ms']['p50']:.2f}", f"{r['vs_teacher']['smaller_x']:.1f}",
             f"{r['vs_teacher']['faster_x']:.1f}"] for name, r in ((name, bench[name]) for name in artifacts)]
    return fitted(header, rows)


def _decision_notes(bench: dict, artifacts: list[str]) -> list[str]:
    """The rule of the quality table's figures and, where the benchmark chose a threshold on val, the deployed
    INT8 model's figures at it; nothing for a benchmark.json older than the recorded rules."""
    decision = bench[artifacts[0]].get("decision")
    if decision is None:
        return []
    rule = decision["test"]
    note = (f"Decisions: `{rule}` ({DECISIONS[rule][0]}) for the accuracy, F1 and sensitivities above; AUC and ECE "
            "do not depend on the rule.")
    if decision["headline"] != rule:
        note += f" `metrics/headline.json` takes accuracy and F1 by `{decision['headline']}` (`benchmark.decision`)."
    lines = wrapped(note)
    deployed = bench.get(DEPLOYED, {})
    at = deployed.get(DECISIONS["val_threshold"][1])
    if at is not None:
        chosen = deployed["decision"]
        classes = list(at["per_class"])
        lines += wrapped(
            f"At the val-chosen threshold (`{chosen['positive_class']}` when its probability reaches "
            f"{chosen['threshold']:.3f}, the best balanced accuracy on val: {chosen['val']['balanced_accuracy']:.3f}), "
            f"`{DEPLOYED}` scores accuracy {_ci(at['accuracy'], at['ci95']['accuracy'])}, balanced accuracy "
            f"{at['balanced_accuracy']:.3f}, macro F1 {at['f1_macro']:.3f}, "
            + ", ".join(f"sensitivity {c} {_rate(at['per_class'][c]['sensitivity'])}" for c in classes)
            + " on the same test images.")
    return lines


def results_table(bench: dict) -> str:
    """Quality, then size and speed, of every artifact, largest first: the order of compression."""
    artifacts = sorted(measured(bench), key=lambda k: -bench[k]["size_bytes"])
    base = bench["baseline_majority_class"]
    (metric, value), = base["test"].items()  # accuracy; balanced accuracy for a multi-label set
    machine = bench["machine"]
    lines = [*_quality(bench, artifacts), *_decision_notes(bench, artifacts), *_cost(bench, artifacts),
             *wrapped(f"Always answering “{base['class']}” scores {value:.3f} {metric.replace('_', ' ')} on the "
                      f"same {bench['test_images']} test images. Timings: {machine['cpu']}, {machine['cpu_count']} "
                      "cores; “faster ×” compares with the teacher's fastest runtime at the same thread count.")]
    for message in bench.get("warnings", []):
        lines += wrapped(f"**Warning:** {message}")
    return "\n".join(lines).rstrip("\n")


def runs_table(shown: list, current: dict | None = None) -> str:
    """One row per finished run of `dvc exp show --json`, named by its recipe, best INT8 accuracy first;
    `default` is the recipe of params.yaml (`current`, exps.workspace_recipe) where some runs have it."""
    runs = collect_runs(shown).runs
    baseline = default_recipe(runs, current)
    rows = [[f"`{label}`", str(r.seed), r.name,
             *(f"{r.metrics[key]:{fmt}}" if key in r.metrics else "n/a" for key, (_, fmt) in COLUMNS.items())]
            for r, label in sorted(zip(runs, recipe_labels(runs, baseline)),
                                   key=lambda pair: -pair[0].metrics.get(headline_metric(DEPLOYED, "acc"), -1.0))]
    header = ["run", "seed", "experiment", *(column for column, _ in COLUMNS.values())]
    note = recipe_note({key: baseline.get(key) for key in varying_keys(r.params for r in runs)},
                       differences(baseline, current))
    return "\n".join([*fitted(header, rows), *wrapped(note)]).rstrip("\n")


def _seeds_summary(report: dict, metrics: list[str], names: list[str]) -> list[str]:
    """Mean ± std per recipe, `default` first, then the others in the order they were compared."""
    order = dict.fromkeys([DEFAULT_RECIPE, *(t["recipe"] for t in report["paired"])])  # JSON sorts the recipes
    recipes = report["recipes"]
    rows = [[f"`{name}`", str(len(recipes[name]["runs"])), *[mean_std(recipes[name]["summary"][m]) for m in metrics]]
            for name in order]
    return fitted(["recipe", "n", *names], rows)


def _seeds_paired(report: dict, metrics: list[str], names: list[str]) -> list[str]:
    """One row per recipe and metric: a row stays narrow whatever the recipe's name."""
    paired = [t for t in report["paired"] if t["metric"] in metrics]
    if not paired:
        return ["Only one recipe: nothing to pair.", ""]
    return [*fitted(["recipe", "metric", "seeds", "mean diff [95% CI]", "Wilcoxon p"],
                    [[f"`{t['recipe']}`", names[metrics.index(t["metric"])], ", ".join(map(str, t["seeds"])),
                      mean_difference(t), p_value(t["p"])] for t in paired], keys=2),
            *small_n_warning(paired)]


def seeds_block(report: dict) -> str:
    """The docs' part of a comparison (`lib.compare`'s report): mean ± std and paired tests of a few
    headline metrics; the rest is in SEEDS_MD."""
    metrics = [m for m in SEEDS_METRICS if m in report["metrics"]] or report["metrics"][:len(SEEDS_METRICS)]
    names = [COLUMNS.get(m, (f"`{m}`",))[0] for m in metrics]
    lines = ["### Experiments compared across seeds", "",
             *wrapped(f"{recipe_note(report['baseline_params'], report.get('baseline_vs_params_yaml'))} Every "
                      f"metric, the experiments of each recipe and the McNemar tests of each run: [{SEEDS_MD}]"
                      f"({os.path.relpath(SEEDS_MD, BLOCK_FILES[SEEDS_BLOCK].parent)})."),
             "#### Mean ± sample std over seeds", "", *_seeds_summary(report, metrics, names),
             f"#### Paired by seed: recipe − `{DEFAULT_RECIPE}`", "", *_seeds_paired(report, metrics, names)]
    return "\n".join(lines).rstrip("\n")


def pruning_block(report: dict) -> str:
    """The pruning ablation of docs/pruning.md (`lib.compare`'s report): per recipe its seeds, the deployed model's
    mean ± std accuracy and AUC, mean size and latency, and its accuracy paired by seed with `default`. Recipes are
    named without their keys' section (`prune.`), which every recipe here shares."""
    acc, auc, *costs = PRUNING_METRICS
    summary, paired = report["recipes"], {t["recipe"]: t for t in report["paired"] if t["metric"] == acc}
    rows = [["`" + SECTION.sub(r"\1", name) + "`", str(summary[name]["summary"][acc]["n"]),
             *(mean_std(summary[name]["summary"][m]) for m in (acc, auc)),
             *(f"{summary[name]['summary'][m]['mean']:{COLUMNS[m][1]}}" for m in costs),
             mean_difference(paired[name]) if name in paired else "—"]
            for name in dict.fromkeys([DEFAULT_RECIPE, *paired])]
    header = ["recipe", "n", *(COLUMNS[m][0] for m in PRUNING_METRICS),
              f"{COLUMNS[acc][0]} − `{DEFAULT_RECIPE}`, paired"]
    return "\n".join(fitted(header, rows)).rstrip("\n")


def fill_block(text: str, block: str, content: str) -> str:
    """Replace what lies between `<!-- block:start -->` and `<!-- block:end -->`."""
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    if start not in text or end not in text:
        raise UserError(f"the file has no {start} … {end} block to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}\n{end}{tail}"


def blocks(bench: dict, seeds: dict | None = None, students: list | None = None,
           current: dict | None = None, search: str | None = None, pruning: dict | None = None) -> dict[str, str]:
    """Each generated block's content: the results table; the multi-seed comparison (`lib.compare`'s report), in
    part; the table of the students' runs (`dvc exp show --json`); the search's front (its Markdown, lib.search);
    the pruning ablation (`lib.compare`'s report). A block whose source is None is left out."""
    contents = {RESULTS_BLOCK: results_table(bench)}
    if pruning is not None:
        contents[PRUNING_BLOCK] = pruning_block(pruning)
    if seeds is not None:
        contents[SEEDS_BLOCK] = seeds_block(seeds)
    if students is not None:
        contents[STUDENTS_BLOCK] = runs_table(students, current)
    if search is not None:
        contents[SEARCH_BLOCK] = search.rstrip("\n")
    return contents


def write_blocks(contents: dict[str, str], files: dict[str, Path] | None = None) -> list[Path]:
    """Fill every block of `contents` in its file (`files`, default BLOCK_FILES); each file is read and written
    once, whole. Returns the files written."""
    by_file: dict[Path, list[str]] = {}
    for block in contents:
        by_file.setdefault((files or BLOCK_FILES)[block], []).append(block)
    for path, names in by_file.items():
        text = path.read_text()
        for name in names:
            text = fill_block(text, name, contents[name])
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return list(by_file)


def committed_blocks() -> dict[str, str]:
    """The blocks of the committed results: metrics/, plots/compare/, plots/students/, plots/search/ and
    plots/pruning/, and params.yaml; the search's block says how to fill it where no search is committed."""
    return blocks(read_json(BENCHMARK), read_json(SEEDS_REPORT) if SEEDS_REPORT.exists() else None,
                  load_exp_show(STUDENTS_EXPS) if STUDENTS_EXPS.exists() else None, workspace_recipe(),
                  SEARCH_FRONT.read_text() if SEARCH_FRONT.exists() else NO_SEARCH,
                  read_json(PRUNING_REPORT) if PRUNING_REPORT.exists() else None)


def show_experiments() -> None:
    keep = [r"^Experiment$", HEADLINE_COLUMNS, *(f"^{re.escape(p)}$" for p in varying_params(load_exp_show()))]
    subprocess.run(["dvc", "exp", "show", "--no-pager", "--drop", ".*", "--keep", "|".join(keep)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite every generated block in its file: "
                        + ", ".join(f"{block} in {path}" for block, path in BLOCK_FILES.items()))
    parser.add_argument("--experiments", action="store_true", help="print the narrowed `dvc exp show`")
    args = parser.parse_args()
    if args.experiments:
        show_experiments()
    elif args.write:
        for path in write_blocks(committed_blocks()):
            print(f"wrote {path}")
    else:
        print(results_table(read_json(BENCHMARK)))


if __name__ == "__main__":
    cli.run(main)
