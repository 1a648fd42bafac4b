"""End to end per task type: `dvc repro` of the real DAG on tiny synthetic sets, a multi-class and a
multi-label `arrays` set and an ImageFolder set at 64 px, each in its own throwaway git repository."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import label_image, make_arrays, make_imagefolder, run, save_png, tiny_run

SPLITS = {"train": 64, "val": 24, "test": 24}


@pytest.fixture(scope="module")
def multi_class(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("multi_class"), lambda d: make_arrays(d, SPLITS, 4),
                    {"source": "arrays"})


@pytest.fixture(scope="module")
def multi_label(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("multi_label"), lambda d: make_arrays(d, SPLITS, 5, multi_label=True),
                    {"source": "arrays"})


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("folder"),
                    lambda d: make_imagefolder(d, {"train": 24, "val": 8, "test": 8}, size=64),
                    {"source": "imagefolder", "image_size": 64})


def read(repo: Path, path: str) -> dict:
    return json.loads((repo / path).read_text())


def assert_finished_with_int8_and_parity(repo: Path, agreement_key: str) -> dict:
    """The run is up to date, its INT8 models exist, every conversion passed parity; the benchmark."""
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}
    for name in ("student_int8.tflite", "student_int8.onnx"):
        assert (repo / "models" / name).stat().st_size > 0
    export, tflite = read(repo, "metrics/export.json"), read(repo, "metrics/tflite.json")
    assert export["student"]["parity_vs_torch"][agreement_key] == 1.0
    assert tflite["parity_vs_onnx"][agreement_key] >= 0.999
    assert agreement_key in read(repo, "metrics/quantize.json")["int8"]["agreement_vs_float32_tflite"]
    bench = read(repo, "metrics/benchmark.json")
    for name in ("teacher_torch", "int8_tflite", "int8_onnx"):
        assert set(bench[name]["test"]) >= {"accuracy", "balanced_accuracy", "auc", "f1_macro", "ece", "ci95"}
        assert bench[name]["test"]["auc"] is not None
    assert "int8_tflite" in read(repo, "metrics/headline.json")
    assert (repo / "plots/explain/gradcam.png").stat().st_size > 0
    return bench


def test_multi_class_arrays_run(multi_class):
    meta = read(multi_class, "data/processed/meta.json")
    assert meta["classes"] == ["class0", "class1", "class2", "class3"] and "task" not in meta
    bench = assert_finished_with_int8_and_parity(multi_class, "top1_agreement")
    assert set(bench["int8_tflite"]["test"]["per_class"]) == set(meta["classes"])
    assert "accuracy" in bench["baseline_majority_class"]["test"]


def test_multi_label_arrays_run(multi_label):
    meta = read(multi_label, "data/processed/meta.json")
    assert meta["task"] == "multi-label" and len(meta["classes"]) == 5
    teacher = read(multi_label, "metrics/teacher.json")
    assert set(teacher["test"]["tuned"]["thresholds"]) == set(meta["classes"])
    bench = assert_finished_with_int8_and_parity(multi_label, "label_agreement")
    test = bench["int8_tflite"]["test"]
    assert {"exact_match", "predicted_positive", "tuned"} <= set(test)
    assert set(test["per_class"]) == set(meta["classes"])
    assert set(test["per_class"]["label0"]) == {"auc", "f1", "sensitivity", "specificity"}
    assert bench["baseline_majority_class"]["test"] == {"balanced_accuracy": 0.5}
    with open(multi_label / "plots/benchmark/predictions.csv") as f:
        row = next(csv.DictReader(f))
    assert len(row["label"]) == len(row["predicted"]) == 5 and set(row["label"]) <= {"0", "1"}
    assert read(multi_label, "plots/benchmark/plots/sklearn/confusion/int8_tflite.json") == []
    run(["dvc", "plots", "show", "--out", "dvc_plots"], multi_label)
    assert "ROC curves of every artifact" in (multi_label / "dvc_plots/index.html").read_text()
    table = run(["python", "-m", "lib.report"], multi_label).stdout
    assert "sensitivity label4" in table and "0.500 balanced accuracy" in table


def test_multi_label_predict_cli_lists_each_label(multi_label):
    save_png(multi_label / "scan.png", label_image(np.random.default_rng(0), np.array([1, 0, 0, 1, 0]), 28, rgb=False))
    out = run(["python", "-m", "lib.predict", "models/student_int8.tflite", "scan.png", "--json"], multi_label)
    row = json.loads(out.stdout)[0]
    assert len(row["top"]) == 5 and set(row["positive"]) <= {f"label{i}" for i in range(5)}


def test_imagefolder_run_at_64_px(folder):
    meta = read(folder, "data/processed/meta.json")
    assert meta["image_size"] == 64 and meta["classes"] == ["ant", "cat"] and "task" not in meta
    assert meta["counts"]["train"] == {"ant": 24, "cat": 24}
    assert_finished_with_int8_and_parity(folder, "top1_agreement")
