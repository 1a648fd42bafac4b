"""The results table of `metrics/benchmark.json`: printed after a run, or written into the README.

    python -m lib.report                 # print the table (what `make repro` ends with)
    python -m lib.report README.md       # rewrite the README's results, multi-seed and students blocks
    python -m lib.report --experiments   # `dvc exp show`, narrowed to the headline figures (`make exps`)

The table is generated from the metrics of a real run, never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

from lib import cli
from lib.compare import collect_runs, experiment_entries, flatten, label_recipes, load_exp_show
from lib.errors import UserError
from lib.io import read_json

RESULTS_BLOCK, SEEDS_BLOCK, STUDENTS_BLOCK = "results", "seeds", "students"
SEEDS_REPORT = Path("plots/compare/compare.md")  # written by `make compare` (lib.compare)
STUDENTS_EXPS = Path("plots/students/experiments.json")  # `dvc exp show --json` of the students, `make students`
RUN_COLUMNS = {  # headline key → (column, format)
    "student_torch.acc": ("student acc", ".3f"), "pruned_torch.acc": ("pruned acc", ".3f"),
    "int8_tflite.acc": ("INT8 acc", ".3f"), "int8_tflite.auc": ("INT8 AUC", ".3f"),
    "int8_tflite.kb": ("INT8 KiB", ",.0f"), "int8_tflite.mmacs": ("MMACs", ".2f"),
    "int8_tflite.ms": ("INT8 ms", ".3f")}

# `dvc exp show` lists every param, every dependency's hash and every metric: hundreds of columns. The
# narrowed table keeps the figures a person compares first, plus the params that differ between experiments.
HEADLINE_COLUMNS = r"^(teacher_torch|student_torch|pruned_torch|int8_tflite)\.acc$|^int8_tflite\.(auc|kb|ms)$"


def _ci(value: float, ci: list[float] | None) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _rate(value: float | None) -> str:
    """A sensitivity, or n/a where the test split holds no image of the class or label."""
    return "n/a" if value is None else f"{value:.3f}"


def results_table(bench: dict) -> str:
    artifacts = sorted((k for k, v in bench.items() if isinstance(v, dict) and "latency_ms" in v),
                       key=lambda k: -bench[k]["size_bytes"])  # largest first: the order of compression
    classes = list(bench[artifacts[0]]["test"]["per_class"])
    header = ["artifact", "accuracy [95% CI]", "AUC [95% CI]", "macro F1",
              *[f"sensitivity {c}" for c in classes], "ECE", "size (KiB)", "params", "MMACs",
              f"latency p50 ({bench[artifacts[0]]['latency_ms']['threads']} thread, ms)",
              "smaller ×", "faster ×"]
    rows = []
    for name in artifacts:
        r, t = bench[name], bench[name]["test"]
        rows.append([
            f"`{name}`", _ci(t["accuracy"], t["ci95"]["accuracy"]),
            _ci(t["auc"], t["ci95"]["auc"]) if t["auc"] is not None else "n/a", f"{t['f1_macro']:.3f}",
            *[_rate(t["per_class"][c]["sensitivity"]) for c in classes], f"{t['ece']:.3f}",
            f"{r['size_bytes'] / 1024:,.0f}", f"{r['params']:,}", f"{r['macs'] / 1e6:,.1f}",
            f"{r['latency_ms']['p50']:.2f}", f"{r['vs_teacher']['smaller_x']:.1f}",
            f"{r['vs_teacher']['faster_x']:.1f}"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    base = bench["baseline_majority_class"]
    (metric, value), = base["test"].items()  # accuracy; balanced accuracy for a multi-label set
    machine = bench["machine"]
    lines += ["", f"Always answering “{base['class']}” scores {value:.3f} {metric.replace('_', ' ')} on the "
              f"same {bench['test_images']} test images. Timings: {machine['cpu']}, {machine['cpu_count']} cores; "
              "“faster ×” compares with the teacher's fastest runtime at the same thread count."]
    lines += [f"\n**Warning:** {message}" for message in bench.get("warnings", [])]
    return "\n".join(lines)


def runs_table(shown: list) -> str:
    """One row per finished run of `dvc exp show --json`, named by the params that differ between runs,
    best INT8 accuracy first."""
    runs = collect_runs(shown).runs
    label_recipes(runs)
    rows = [[f"`{r.recipe}`", str(r.seed), r.name,
             *(f"{r.metrics[key]:{fmt}}" if key in r.metrics else "n/a" for key, (_, fmt) in RUN_COLUMNS.items())]
            for r in sorted(runs, key=lambda r: -r.metrics.get("int8_tflite.acc", -1.0))]
    header = ["run", "seed", "experiment", *(column for column, _ in RUN_COLUMNS.values())]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def fill_block(text: str, block: str, content: str) -> str:
    """Replace what lies between `<!-- block:start -->` and `<!-- block:end -->`."""
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    if start not in text or end not in text:
        raise UserError(f"the README has no {start} … {end} block to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}\n{end}{tail}"


def update_readme(readme: Path, bench: dict, seeds_report: str | None = None,
                  students: list | None = None) -> None:
    """The results table; the multi-seed comparison, its headings nested under the README's section; and
    the table of the students' runs."""
    text = fill_block(readme.read_text(), RESULTS_BLOCK, results_table(bench))
    if seeds_report is not None:
        nested = "\n".join(f"##{line}" if line.startswith("#") else line for line in seeds_report.splitlines())
        text = fill_block(text, SEEDS_BLOCK, nested)
    if students is not None:
        text = fill_block(text, STUDENTS_BLOCK, runs_table(students))
    readme.write_text(text)


def varying_params(shown: list) -> list[str]:
    """The params whose value differs between the rows of `dvc exp show --json`."""
    values: dict[str, set[str]] = defaultdict(set)
    for entry, _, _ in experiment_entries(shown):
        for params_file in ((entry.get("data") or {}).get("params") or {}).values():
            for key, value in flatten(params_file.get("data") or {}).items():
                values[key].add(json.dumps(value, sort_keys=True))
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def show_experiments() -> None:
    keep = [r"^Experiment$", HEADLINE_COLUMNS, *(f"^{re.escape(p)}$" for p in varying_params(load_exp_show()))]
    subprocess.run(["dvc", "exp", "show", "--no-pager", "--drop", ".*", "--keep", "|".join(keep)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("readme", nargs="?", type=Path, help="rewrite this file's results table")
    parser.add_argument("--experiments", action="store_true", help="print the narrowed `dvc exp show`")
    args = parser.parse_args()
    if args.experiments:
        show_experiments()
    elif args.readme:
        update_readme(args.readme, read_json("metrics/benchmark.json"),
                      SEEDS_REPORT.read_text() if SEEDS_REPORT.exists() else None,
                      load_exp_show(STUDENTS_EXPS) if STUDENTS_EXPS.exists() else None)
    else:
        print(results_table(read_json("metrics/benchmark.json")))


if __name__ == "__main__":
    cli.run(main)
