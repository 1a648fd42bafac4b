"""benchmark: every artifact on the same test split — quality, uncertainty, size, MACs, latency."""

import argparse
import csv
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve
from tqdm import tqdm

from lib import bench, checks
from lib.cli import run
from lib.data import is_multi_label, normalize
from lib.experiment import Context, setup
from lib.io import atomic_path, write_json
from lib.metrics import (THRESHOLD, accuracy_from_probs, auc_score, bootstrap_ci, classification_metrics,
                         f1_thresholds, majority_baseline)
from lib.models import Ensemble, ensemble_members, load_checkpoint, save_checkpoint
from lib.pruning import count_macs_params
from lib.runtimes import predict


def artifacts(models_dir: Path) -> dict[str, tuple[Path, str]]:
    """Artifact name → (file, the torch checkpoint whose network it runs); the QAT models where the `qat`
    stage wrote them (`quantize.method: qat`)."""
    m = models_dir
    qat = {name: (m / "qat" / file, "student_pruned.pt") for name, file in QAT_ARTIFACTS.items()
           if (m / "qat" / file).is_file()}
    return {
        "teacher_torch": (m / "teacher.pt", "teacher.pt"),
        "teacher_onnx": (m / "teacher.onnx", "teacher.pt"),
        "student_torch": (m / "student.pt", "student.pt"),
        "pruned_torch": (m / "student_pruned.pt", "student_pruned.pt"),
        "pruned_onnx": (m / "student.onnx", "student_pruned.pt"),
        "float32_tflite": (m / "student_float32.tflite", "student_pruned.pt"),
        "dynamic_tflite": (m / "student_dynamic.tflite", "student_pruned.pt"),
        "int8_tflite": (m / "student_int8.tflite", "student_pruned.pt"),
        "int8_onnx": (m / "student_int8.onnx", "student_pruned.pt"),
        **qat,
    }


def teacher_members(models_dir: Path, out: Path) -> dict[str, tuple[Path, str]]:
    """An ensemble teacher's members as artifacts `teacher_<arch>_torch`, each saved as a checkpoint in `out`
    (which is also its source, for MACs); none for a single teacher."""
    teacher, spec = load_checkpoint(models_dir / "teacher.pt")
    if not isinstance(teacher, Ensemble):
        return {}
    entries = {}
    for arch, member in zip(ensemble_members(spec.arch), teacher.members):
        path = out / f"teacher_{arch}.pt"
        save_checkpoint(member, dataclasses.replace(spec, arch=arch), path)
        entries[f"teacher_{arch}_torch"] = (path, str(path))
    return entries


DEPLOYED = "int8_tflite"  # the artifact an edge device runs: one point per experiment in `dvc plots diff`
QAT_ARTIFACTS = {"qat_tflite": "student_qat_int8.tflite", "qat_onnx": "student_qat_int8.onnx"}
# INT8 model → the float model it must not fall far below (QAT: the pruned student it was fine-tuned from)
INT8_SOURCES = {"int8_tflite": "float32_tflite", "int8_onnx": "pruned_onnx",
                "qat_tflite": "float32_tflite", "qat_onnx": "pruned_onnx"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/processed")
    parser.add_argument("--models", default="models")
    parser.add_argument("--metrics", default="metrics/benchmark.json")
    parser.add_argument("--headline", default="metrics/headline.json")
    parser.add_argument("--plots", default="plots/benchmark")
    args = parser.parse_args()

    ctx = setup(args.data)
    cfg, seed, classes = ctx.params.benchmark, ctx.params.seed, ctx.meta["classes"]
    images, labels = ctx.splits["test"]
    sample = normalize(images[:cfg.throughput_batch], ctx.meta)
    machine = bench.machine()
    all_cores = machine["cpu_count"]
    ops = {}
    results, probabilities = {}, {}
    with tempfile.TemporaryDirectory() as members:  # an ensemble's members, saved for the loop
        measured = {**artifacts(Path(args.models)), **teacher_members(Path(args.models), Path(members))}
        for name, (path, source) in tqdm(measured.items(), desc="benchmark", disable=None):
            if source not in ops:
                ops[source] = count_macs_params(load_checkpoint(Path(args.models) / source)[0], ctx.example_input())
            probs = predict(path, images, ctx.meta)
            probabilities[name] = probs
            test = classification_metrics(labels, probs, classes, val_thresholds(path, ctx))
            test["ci95"] = {"accuracy": bootstrap_ci(labels, probs, accuracy_from_probs, cfg.bootstrap_samples, seed),
                            "auc": bootstrap_ci(labels, probs, auc_score, cfg.bootstrap_samples, seed)}
            results[name] = {
                "test": test,
                "size_bytes": bench.size_bytes(path),
                "macs": ops[source][0],
                "params": ops[source][1],
                "latency_ms": bench.latency_ms(path, sample, cfg.threads, cfg.warmup, cfg.runs),
                "latency_ms_all_cores": bench.latency_ms(path, sample, all_cores, cfg.warmup, cfg.runs),
                "throughput": bench.throughput(path, sample, all_cores, cfg.throughput_runs),
            }
    add_ratios_to_teacher(results)
    baseline = majority_baseline(ctx.splits["train"][1], labels, classes)
    (metric, majority), = baseline["test"].items()
    for result in results.values():
        result["beats_majority_class"] = result["test"][metric] > majority
    report = {**results, "baseline_majority_class": baseline,
              "machine": machine, "test_images": len(labels), "seed": seed,
              "warnings": checks.announce(sanity_warnings(results, baseline["test"]))}
    write_plots(Path(args.plots), results, probabilities, labels, classes)
    write_json(args.metrics, report)
    write_json(args.headline, headline(results))


def val_thresholds(path: Path, ctx: Context) -> np.ndarray | None:
    """Multi-label: the artifact's per-label decision thresholds, chosen on val; None for single-label."""
    if not is_multi_label(ctx.meta):
        return None
    images, labels = ctx.splits["val"]
    return f1_thresholds(labels, predict(path, images, ctx.meta))


def sanity_warnings(results: dict, baseline: dict) -> list[str]:
    """Artifacts that collapsed, are no better than the majority class, or lost AUC in INT8.

    `baseline`: the majority answer's test figure, by name (accuracy, or balanced accuracy for multi-label).
    """
    (metric, majority), = baseline.items()
    warnings = []
    for name, result in results.items():
        warnings += checks.single_class_warnings(name, {"test": result["test"]})
        warnings += checks.majority_warning(name, result["test"][metric], majority, metric)
    for int8, float32 in INT8_SOURCES.items():
        if int8 in results:
            warnings += checks.int8_auc_warning(int8, results[int8]["test"]["auc"],
                                                results[float32]["test"]["auc"])
    return warnings


def headline(results: dict) -> dict:
    """The few figures per artifact that `dvc exp show` and `dvc metrics diff` show by default.

    Short keys keep the experiments table narrow; every figure is in `benchmark.json` at full detail.
    """
    return {name: {"acc": r["test"]["accuracy"], "auc": r["test"]["auc"], "f1": r["test"]["f1_macro"],
                   "kb": round(r["size_bytes"] / 1024, 1), "mmacs": round(r["macs"] / 1e6, 2),
                   "ms": round(r["latency_ms"]["p50"], 4), "x_smaller": round(r["vs_teacher"]["smaller_x"], 2),
                   "x_faster": round(r["vs_teacher"]["faster_x"], 2)}
            for name, r in results.items()}


def add_ratios_to_teacher(results: dict) -> None:
    """Size ×, latency × (against the teacher's fastest runtime) and accuracy retention, per artifact."""
    teacher = results["teacher_torch"]
    teacher_latency = min(results[k]["latency_ms"]["p50"] for k in ("teacher_torch", "teacher_onnx"))
    for result in results.values():
        result["vs_teacher"] = {
            "smaller_x": teacher["size_bytes"] / result["size_bytes"],
            "faster_x": teacher_latency / result["latency_ms"]["p50"],
            "accuracy_retention_pct": 100 * result["test"]["accuracy"] / teacher["test"]["accuracy"],
        }


def write_plots(out: Path, results: dict, probabilities: dict, labels: np.ndarray, classes: list[str]) -> None:
    """Confusion data (dvclive), ROC curves, the per-artifact table, the deployed model's point and every
    test prediction, as one folder.

    Multi-label has no single confusion matrix: each artifact's confusion file is an empty table, which
    `dvc plots show` draws as an empty plot.
    """
    from dvclive import Live

    with atomic_path(out) as tmp:
        with Live(str(tmp), save_dvc_exp=False, dvcyaml=None) as live:
            for name, probs in probabilities.items():
                if labels.ndim == 2:
                    write_empty_confusion(tmp / "plots/sklearn/confusion" / f"{name}.json")
                    continue
                preds = probs.argmax(axis=1)
                live.log_sklearn_plot("confusion_matrix", [classes[i] for i in labels],
                                      [classes[i] for i in preds], name=f"confusion/{name}.json")
        write_csv(tmp / "roc.csv", [
            {"artifact": name, "step": step, "fpr": fpr, "tpr": tpr}
            for name, probs in probabilities.items()
            for step, (fpr, tpr) in enumerate(zip(*roc_curve(*roc_inputs(labels, probs))[:2]))])
        rows = [{"artifact": name, "format": name.rsplit("_", 1)[-1], "accuracy": r["test"]["accuracy"],
                 "auc": r["test"]["auc"], "size_kb": r["size_bytes"] / 1024, "latency_ms": r["latency_ms"]["p50"],
                 "params": r["params"], "macs": r["macs"]} for name, r in results.items()]
        write_csv(tmp / "artifacts.csv", rows)
        write_csv(tmp / "deployed.csv", [row for row in rows if row["artifact"] == DEPLOYED])
        write_csv(tmp / "predictions.csv", [
            {"artifact": name, "index": i, "label": truth, "predicted": predicted,
             **{f"p_{c}": float(probs[i, k]) for k, c in enumerate(classes)}}
            for name, probs in probabilities.items()
            for i, (truth, predicted) in enumerate(zip(*answers(labels, probs)))])


def write_empty_confusion(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, [])


def answers(labels: np.ndarray, probs: np.ndarray) -> tuple[list, list]:
    """Each image's true and predicted answer as predictions.csv records them: class indices, or for
    multi-label the 0/1 string of its labels (predicted at 0.5), so McNemar (`lib.compare`) tests exact matches."""
    if labels.ndim == 2:
        return [_bits(row) for row in labels], [_bits(row >= THRESHOLD) for row in probs]
    return [int(y) for y in labels], [int(p) for p in probs.argmax(axis=1)]


def _bits(row: np.ndarray) -> str:
    return "".join(str(int(v)) for v in row)


def roc_inputs(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary: positive-class scores. More classes, or labels: micro-averaged (every class or label, pooled)."""
    if labels.ndim == 2:
        return labels.ravel(), probs.ravel()
    if probs.shape[1] == 2:
        return labels, probs[:, 1]
    onehot = np.eye(probs.shape[1], dtype=int)[labels]
    return onehot.ravel(), probs.ravel()


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    run(main)
