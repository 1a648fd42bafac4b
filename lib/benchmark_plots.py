"""The benchmark's plot folder, the data behind `dvc plots show` and `lib.compare`.

    confusion (dvclive)   plots/sklearn/confusion/<artifact>.json, per artifact
    roc.csv               one ROC curve per artifact
    artifacts.csv         accuracy, AUC, size, latency, params, MACs per artifact (the trade-off plots)
    deployed.csv          the deployed artifact's row: one point per experiment in `dvc plots diff`
    predictions.csv       every test image's answer per artifact (McNemar tests in `lib.compare`)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from lib.artifacts import DEPLOYED, Artifact
from lib.io import atomic_path, write_json
from lib.task import Task


def write_benchmark_plots(out: Path, task: Task, labels: np.ndarray, measured: list[Artifact],
                          results: dict[str, dict], probabilities: dict[str, np.ndarray]) -> None:
    """Every file above, as one folder written atomically."""
    with atomic_path(out) as tmp:
        write_confusions(tmp, task, labels, probabilities)
        write_csv(tmp / "roc.csv", roc_rows(task, labels, probabilities))
        rows = artifact_rows(measured, results)
        write_csv(tmp / "artifacts.csv", rows)
        write_csv(tmp / "deployed.csv", [row for row in rows if row["artifact"] == DEPLOYED])
        write_csv(tmp / "predictions.csv", prediction_rows(task, labels, probabilities))


def write_confusions(out: Path, task: Task, labels: np.ndarray, probabilities: dict[str, np.ndarray]) -> None:
    """Confusion data through dvclive; where the task has no single confusion matrix (multi-label), an
    empty table, which `dvc plots show` draws as an empty plot."""
    from dvclive import Live

    with Live(str(out), save_dvc_exp=False, dvcyaml=None) as live:
        for name, probs in probabilities.items():
            pair = task.confusion(labels, probs)
            if pair is None:
                write_empty_confusion(out / "plots/sklearn/confusion" / f"{name}.json")
                continue
            live.log_sklearn_plot("confusion_matrix", *pair, name=f"confusion/{name}.json")


def write_empty_confusion(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, [])


def roc_rows(task: Task, labels: np.ndarray, probabilities: dict[str, np.ndarray]) -> list[dict]:
    """Each artifact's ROC curve over the task's (truth, score) vectors."""
    return [{"artifact": name, "step": step, "fpr": fpr, "tpr": tpr}
            for name, probs in probabilities.items()
            for step, (fpr, tpr) in enumerate(zip(*roc_curve(*task.roc_inputs(labels, probs))[:2]))]


def artifact_rows(measured: list[Artifact], results: dict[str, dict]) -> list[dict]:
    """One row per artifact of the trade-off plots (accuracy against size and latency)."""
    formats = {artifact.name: artifact.format for artifact in measured}
    return [{"artifact": name, "format": formats[name], "accuracy": r["test"]["accuracy"],
             "auc": r["test"]["auc"], "size_kb": r["size_bytes"] / 1024, "latency_ms": r["latency_ms"]["p50"],
             "params": r["params"], "macs": r["macs"]} for name, r in results.items()]


def prediction_rows(task: Task, labels: np.ndarray, probabilities: dict[str, np.ndarray]) -> list[dict]:
    """Every test image's true and predicted answer, as the task records them, and its probabilities."""
    return [{"artifact": name, "index": i, "label": truth, "predicted": predicted,
             **{f"p_{c}": float(probs[i, k]) for k, c in enumerate(task.classes)}}
            for name, probs in probabilities.items()
            for i, (truth, predicted) in enumerate(zip(*task.answers(labels, probs)))]


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
