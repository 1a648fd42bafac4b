"""The model card's quantitative analyses: how each figure is printed, and the tables built from the benchmark.

`number(key, value)` is the one rounding per metric key (the key of the figure in metrics/*.json or
meta.json); the tests print a figure with it to check that the card shows it. Derived figures (differences
between chain steps, per-class intervals) are computed here from the figures read.
"""

from __future__ import annotations

from lib import artifacts
from lib.artifacts import DEPLOYED
from lib.card_render import Block, Figure, Heading, Para, Table
from lib.stats import rate_interval

# The deployed model's ancestry, each step measured against the one before.
CHAIN = ("teacher_torch", "student_torch", "pruned_torch", "pruned_onnx", "float32_tflite", DEPLOYED)


def _share(v: float) -> str:
    return f"{v:.3f}"


def _times(v: float) -> str:
    return f"{v:.1f}"


FORMATS = {  # metric key → how the card prints it; any other key is printed as it is (counts, names)
    **dict.fromkeys(("accuracy", "auc", "f1_macro", "balanced_accuracy", "exact_match", "ece", "sensitivity",
                     "specificity", "f1", "thresholds", "threshold", "top1_agreement", "label_agreement"), _share),
    "max_abs_prob_diff": lambda v: f"{v:.1e}",
    "size_bytes": lambda v: f"{v / 1024:,.1f}",  # KiB
    "params": lambda v: f"{v:,}",
    "macs": lambda v: f"{v / 1e6:,.2f}",  # millions
    "p50": lambda v: f"{v:.3f}",  # ms
    "smaller_x": _times, "faster_x": _times,
    "accuracy_retention_pct": lambda v: f"{v:.1f} %",
    "removed_fraction": lambda v: f"{100 * v:.1f} %",
    "ratio": lambda v: f"{v:g}",
}


def number(key: str, value) -> str:
    """One figure as the card prints it; n/a where the metrics leave it undefined (None)."""
    return "n/a" if value is None else FORMATS.get(key, str)(value)


def with_interval(key: str, value, bounds: list[float] | None) -> str:
    """'0.910 [0.886, 0.931]', or the figure alone when it has no interval."""
    if bounds is None:
        return number(key, value)
    return f"{number(key, value)} [{number(key, bounds[0])}, {number(key, bounds[1])}]"


def in_table_order(results: dict[str, dict]) -> dict[str, dict]:
    """The artifacts in the order of the artifact table (benchmark.json sorts its keys); others after."""
    rank = {name: i for i, name in enumerate(artifacts.NAMES)}
    return {name: results[name] for name in sorted(results, key=lambda n: (rank.get(n, len(rank)), n))}


def _points(now: float | None, before: float | None) -> str:
    return "" if now is None or before is None else f" ({100 * (now - before):+.1f} pts)"


def _fold(before: float, now: float) -> str:
    return f" (×{before / now:.1f})" if now else ""


def chain_row(name: str, what: str, result: dict, before: dict | None) -> tuple[str, ...]:
    """One step of the chain: its figures and, against the step before, what it cost and bought."""
    test, ms = result["test"], result["latency_ms"]["p50"]
    cells = [number("accuracy", test["accuracy"]), number("auc", test["auc"]),
             number("size_bytes", result["size_bytes"]), number("p50", ms)]
    if before is not None:
        cells[0] += _points(test["accuracy"], before["test"]["accuracy"])
        cells[1] += _points(test["auc"], before["test"]["auc"])
        cells[2] += _fold(before["size_bytes"], result["size_bytes"])
        cells[3] += _fold(before["latency_ms"]["p50"], ms)
    return (what, f"`{name}`", *cells)


def chain_section(results: dict[str, dict], described: dict[str, str]) -> list[Block]:
    """The chain's table; `described`: what each step did, by artifact name."""
    steps = [name for name in CHAIN if name in results]
    rows = tuple(chain_row(name, described[name], results[name], results[steps[i - 1]] if i else None)
                 for i, name in enumerate(steps))
    threads = results[DEPLOYED]["latency_ms"]["threads"]
    return [Heading(2, "Compression chain"),
            Para("What each step cost and bought, against the step before: accuracy and AUC differences in "
                 "points, size and latency as times smaller and faster (latency: median of single-image "
                 f"runs on {number('threads', threads)} thread(s))."),
            Table(("step", "artifact", "accuracy", "AUC", "size (KiB)", "latency (ms)"), rows)]


def _row_info(name: str) -> tuple[str, str]:
    """Runtime and precision; a name outside the table is an ensemble teacher's member, run as the teacher."""
    known = {a.name: a for a in artifacts.TABLE}.get(name) or artifacts.by_name(artifacts.TEACHER)
    return known.runtime, known.precision


def artifacts_section(results: dict[str, dict]) -> list[Block]:
    quality, cost = [], []
    for name, r in in_table_order(results).items():
        t, ci = r["test"], r["test"].get("ci95", {})
        quality.append((f"`{name}`", *_row_info(name), with_interval("accuracy", t["accuracy"], ci.get("accuracy")),
                        with_interval("auc", t["auc"], ci.get("auc")), number("f1_macro", t["f1_macro"]),
                        number("balanced_accuracy", t["balanced_accuracy"]), number("ece", t["ece"])))
        vs = r["vs_teacher"]
        cost.append((f"`{name}`", number("size_bytes", r["size_bytes"]), number("params", r["params"]),
                     number("macs", r["macs"]), number("p50", r["latency_ms"]["p50"]),
                     number("smaller_x", vs["smaller_x"]), number("faster_x", vs["faster_x"]),
                     number("accuracy_retention_pct", vs["accuracy_retention_pct"])))
    return [Heading(2, "Every artifact on the test split"),
            Table(("artifact", "runtime", "precision", "accuracy [95% CI]", "AUC [95% CI]", "macro F1",
                   "balanced accuracy", "ECE"), tuple(quality)),
            Table(("artifact", "size (KiB)", "parameters", "MACs (millions)", "latency p50 (ms)",
                   "× smaller", "× faster", "accuracy retained"), tuple(cost)),
            Para("× smaller and × faster compare with the teacher (latency: its fastest runtime); accuracy "
                 "retained is the artifact's accuracy as a share of the teacher's."),
            Figure("tradeoff", "Test accuracy (95 % CI) and size on disk of every artifact")]


def class_rates(meta: dict, bench: dict) -> dict[str, dict[str, tuple[float | None, list[float] | None]]]:
    """The deployed model's sensitivity and specificity per class, each with its Wilson interval over the
    class's test images (sensitivity) or the other test images (specificity)."""
    total = bench["test_images"]
    rates = {}
    for name, figures in bench[DEPLOYED]["test"]["per_class"].items():
        positives = meta["counts"]["test"][name]
        rates[name] = {"sensitivity": (figures["sensitivity"], rate_interval(figures["sensitivity"], positives)),
                       "specificity": (figures["specificity"],
                                       rate_interval(figures["specificity"], total - positives))}
    return rates


def per_class_rows(meta: dict, bench: dict) -> tuple[tuple[str, ...], ...]:
    """Per class: test images, sensitivity and specificity with intervals, and AUC / F1 where given."""
    per_class = bench[DEPLOYED]["test"]["per_class"]
    return tuple((name, number("counts", meta["counts"]["test"][name]),
                  *(with_interval(key, *rates[key]) for key in ("sensitivity", "specificity")),
                  *(number(key, per_class[name][key]) for key in ("auc", "f1") if key in per_class[name]))
                 for name, rates in class_rates(meta, bench).items())


def per_class_section(meta: dict, bench: dict) -> list[Block]:
    test = bench[DEPLOYED]["test"]
    extra = tuple(label for key, label in (("auc", "AUC"), ("f1", "F1"))
                  if any(key in rates for rates in test["per_class"].values()))
    return [Heading(2, f"Per class, deployed model (`{DEPLOYED}`)"),
            Table(("class", "test images", "sensitivity [95% CI]", "specificity [95% CI]", *extra),
                  per_class_rows(meta, bench)),
            Para("Sensitivity: the share of the class's test images the model finds; specificity: the share of "
                 "the other test images it does not call that class. Intervals: Wilson score, from the rate "
                 "and its number of test images."),
            Figure("per_class", f"Sensitivity and specificity per class (95 % Wilson intervals), {DEPLOYED}")]


def calibration_section(results: dict[str, dict]) -> list[Block]:
    ece = {name: number("ece", results[name]["test"]["ece"]) for name in (artifacts.TEACHER, DEPLOYED)}
    return [Heading(2, "Calibration"),
            Para(f"Expected calibration error (top-label ECE: mean gap between confidence and accuracy over "
                 f"confidence bins, weighted by images) of the deployed model: {ece[DEPLOYED]}; of the "
                 f"teacher: {ece[artifacts.TEACHER]}. Every artifact's ECE is in the table above. A "
                 "probability is a calibrated frequency only on data like the test split.")]
