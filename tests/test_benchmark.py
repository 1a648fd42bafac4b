"""The benchmark's rules on small synthetic results: ratios to the teacher, the majority baseline, the
sanity warnings and the plot folder, for a single-label and a multi-label task."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from lib import artifacts, benchmark
from lib.benchmark_plots import write_benchmark_plots
from lib.task import named

CLASSES = ["normal", "pneumonia"]
LABELS = np.array([0, 0, 0, 1, 1])
GOOD = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
RANKED_BADLY = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4], [0.4, 0.6]])
CONSTANT = np.tile([0.6, 0.4], (5, 1))


def measured(task, probs: np.ndarray, size_bytes: int, p50: float, labels: np.ndarray = LABELS) -> dict:
    return {"test": task.metrics(labels, probs), "size_bytes": size_bytes, "macs": 2_000_000, "params": 500,
            "latency_ms": {"p50": p50}}


@pytest.fixture
def task():
    return named("multi-class", CLASSES)


def synthetic_results(task, **probs: np.ndarray) -> dict:
    """teacher_torch, teacher_onnx (the faster teacher) and the named artifacts, all scored on LABELS."""
    results = {"teacher_torch": measured(task, GOOD, 4000, 2.0), "teacher_onnx": measured(task, GOOD, 4000, 1.0)}
    results.update({name: measured(task, p, 1000, 0.25) for name, p in probs.items()})
    return results


def test_ratios_compare_with_the_teacher_size_and_its_fastest_runtime(task):
    results = synthetic_results(task, int8_tflite=GOOD)
    results["teacher_resnet18_torch"] = measured(task, GOOD, 2000, 0.1)  # a member: not the whole teacher
    benchmark.add_ratios_to_teacher(results)
    assert results["int8_tflite"]["vs_teacher"] == {"smaller_x": 4.0, "faster_x": 4.0,
                                                    "accuracy_retention_pct": 100.0}
    assert results["teacher_torch"]["vs_teacher"]["faster_x"] == 0.5


def test_int8_models_are_checked_against_their_float_source(task):
    results = synthetic_results(task, float32_tflite=GOOD, int8_tflite=RANKED_BADLY, pruned_onnx=GOOD)
    warnings = benchmark.sanity_warnings(task, results, {"accuracy": 0.5})
    assert len(warnings) == 1 and warnings[0].startswith("int8_tflite: test AUC")


def test_collapsed_and_majority_level_artifacts_are_warned_about(task):
    results = synthetic_results(task, int8_tflite=CONSTANT, float32_tflite=CONSTANT)
    warnings = benchmark.sanity_warnings(task, results, {"accuracy": 0.6})
    assert sum("collapsed" in w for w in warnings) == 2
    assert sum("no better than always answering the majority class" in w for w in warnings) == 2


def fake_context(task, train_labels: np.ndarray, labels: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(task=task, splits={"train": (None, train_labels), "test": (None, labels)},
                           params=SimpleNamespace(seed=7))


def test_report_adds_the_baseline_and_the_run(task, capsys):
    results = synthetic_results(task, float32_tflite=GOOD, int8_tflite=CONSTANT)
    ctx = fake_context(task, np.array([0, 0, 1]), LABELS)
    report = benchmark.report(ctx, results, {"cpu": "test", "cpu_count": 2})
    assert report["baseline_majority_class"] == {"class": "normal", "test": {"accuracy": 0.6}}
    assert report["teacher_torch"]["beats_majority_class"] and not report["int8_tflite"]["beats_majority_class"]
    assert (report["test_images"], report["seed"]) == (5, 7)
    assert report["warnings"] and "WARNING: int8_tflite" in capsys.readouterr().err
    assert list(artifacts.measured(report)) == ["teacher_torch", "teacher_onnx", "float32_tflite",
                                                      "int8_tflite"]


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_plots(tmp_path, task, labels: np.ndarray, probs: np.ndarray):
    names = ["teacher_torch", "int8_tflite"]
    results = {name: measured(task, probs, 1024, 1.0, labels) for name in names}
    write_benchmark_plots(tmp_path / "plots", task, labels, [artifacts.by_name(n) for n in names], results,
                          {name: probs for name in names})
    return tmp_path / "plots"


def test_plot_folder_holds_confusion_roc_table_deployed_point_and_predictions(tmp_path, task):
    out = write_plots(tmp_path, task, LABELS, GOOD)
    confusion = json.loads((out / "plots/sklearn/confusion/int8_tflite.json").read_text())
    assert len(confusion) == 5 and {"actual", "predicted"} <= set(confusion[0])
    assert {row["artifact"] for row in read_csv(out / "roc.csv")} == {"teacher_torch", "int8_tflite"}
    assert [(r["artifact"], r["format"]) for r in read_csv(out / "artifacts.csv")] == [
        ("teacher_torch", "torch"), ("int8_tflite", "tflite")]
    assert [r["artifact"] for r in read_csv(out / "deployed.csv")] == ["int8_tflite"]
    predictions = read_csv(out / "predictions.csv")
    assert len(predictions) == 10 and predictions[4] == {
        "artifact": "teacher_torch", "index": "4", "label": "1", "predicted": "1", "p_normal": "0.4",
        "p_pneumonia": "0.6"}


def test_a_task_without_a_confusion_matrix_writes_empty_tables(tmp_path):
    task = named("multi-label", ["effusion", "nodule"])
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.uint8)
    probs = np.array([[0.9, 0.2], [0.3, 0.7], [0.6, 0.8], [0.1, 0.4]])
    out = write_plots(tmp_path, task, labels, probs)
    assert json.loads((out / "plots/sklearn/confusion/teacher_torch.json").read_text()) == []
    assert read_csv(out / "predictions.csv")[2]["predicted"] == "11"
