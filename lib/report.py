"""Render the results table of `metrics/benchmark.json` into the README, between two markers.

    python -m lib.report README.md

The table is generated from the committed metrics, never typed by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lib.io import read_json

START, END = "<!-- results:start -->", "<!-- results:end -->"


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
    return "\n".join(lines)


def update_readme(readme: Path, bench: dict) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} … {END} block to fill")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{results_table(bench)}\n{END}{tail}")


if __name__ == "__main__":
    update_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"),
                  read_json("metrics/benchmark.json"))
