"""The results table of `metrics/benchmark.json`: printed after a run, or written into the README.

    python -m lib.report                 # print the table (what `make repro` ends with)
    python -m lib.report README.md       # rewrite the README's table between its two markers
    python -m lib.report --experiments   # `dvc exp show`, narrowed to the headline figures (`make exps`)

The table is generated from the metrics of a real run, never typed by hand.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from lib.io import read_json

START, END = "<!-- results:start -->", "<!-- results:end -->"

# `dvc exp show` lists every param, every dependency's hash and every metric: hundreds of columns. These
# patterns keep the figures a person compares first, plus whatever params differ between experiments.
EXPERIMENT_COLUMNS = r"^(teacher_torch|student_torch|pruned_torch|int8_tflite)\.acc$|^int8_tflite\.(auc|kb|ms|x_faster)$"
HIDDEN_COLUMNS = r"^Created$|^(lib|stages|data|models)/|^params\.yaml$"


def _ci(value: float, ci: list[float] | None) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


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
            *[f"{t['per_class'][c]['sensitivity']:.3f}" for c in classes], f"{t['ece']:.3f}",
            f"{r['size_bytes'] / 1024:,.0f}", f"{r['params']:,}", f"{r['macs'] / 1e6:,.1f}",
            f"{r['latency_ms']['p50']:.2f}", f"{r['vs_teacher']['smaller_x']:.1f}",
            f"{r['vs_teacher']['faster_x']:.1f}"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    base = bench["baseline_majority_class"]
    machine = bench["machine"]
    lines += ["", f"Always answering “{base['class']}” scores {base['test']['accuracy']:.3f} accuracy on the "
              f"same {bench['test_images']} test images. Timings: {machine['cpu']}, {machine['cpu_count']} cores; "
              "“faster ×” compares with the teacher's fastest runtime at the same thread count."]
    lines += [f"\n**Warning:** {message}" for message in bench.get("warnings", [])]
    return "\n".join(lines)


def update_readme(readme: Path, bench: dict) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} … {END} block to fill")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{results_table(bench)}\n{END}{tail}")


def show_experiments() -> None:
    subprocess.run(["dvc", "exp", "show", "--no-pager", "--only-changed", "--drop", HIDDEN_COLUMNS,
                    "--keep", EXPERIMENT_COLUMNS], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("readme", nargs="?", type=Path, help="rewrite this file's results table")
    parser.add_argument("--experiments", action="store_true", help="print the narrowed `dvc exp show`")
    args = parser.parse_args()
    if args.experiments:
        show_experiments()
    elif args.readme:
        update_readme(args.readme, read_json("metrics/benchmark.json"))
    else:
        print(results_table(read_json("metrics/benchmark.json")))


if __name__ == "__main__":
    main()
