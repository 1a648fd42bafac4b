"""End to end per task type and switch: `dvc repro` of the real DAG on tiny synthetic sets (conftest's
`multi_class` and `multi_label` projects), each in its own throwaway git repository.

The switches and sources ride on the task projects: the multi-class one reads a capsule-endoscopy-shaped
ImageFolder set, has an ensemble teacher and prunes in two steps; the multi-label one reads arrays and starts
its teacher from a checkpoint. Pruning ratio 0 and distillation alpha 0 are tested stage by stage
(test_switches)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import CAPSULE_CLASSES, CAPSULE_SIZE, START_WEIGHTS, label_image, run, save_png
from test_pipeline_e2e import ARTIFACTS


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


def test_multi_class_capsule_shaped_imagefolder_run(multi_class):
    meta = read(multi_class, "data/processed/meta.json")
    assert meta["image_size"] == CAPSULE_SIZE and meta["channels"] == 3 and "task" not in meta
    assert meta["classes"] == list(CAPSULE_CLASSES) and meta["counts"]["train"] == dict.fromkeys(CAPSULE_CLASSES, 16)
    bench = assert_finished_with_int8_and_parity(multi_class, "top1_agreement")
    assert set(bench["int8_tflite"]["test"]["per_class"]) == set(CAPSULE_CLASSES)
    assert "accuracy" in bench["baseline_majority_class"]["test"]


def test_ensemble_teacher_and_iterative_pruning_run_the_whole_chain(multi_class):
    teacher = read(multi_class, "metrics/teacher.json")
    assert teacher["model"] == "resnet18+mobilenetv2"
    assert {arch: m["seed"] for arch, m in teacher["members"].items()} == {"resnet18": 42, "mobilenetv2": 43}
    assert all("auc" in m["test"] for m in teacher["members"].values())
    prune = read(multi_class, "metrics/prune.json")
    assert [s["ratio"] for s in prune["steps"]] == pytest.approx([0.25, 0.5])
    assert "finetune" in prune["steps"][0] and "finetune" not in prune["steps"][1]
    assert prune["steps"][1]["params"] == prune["params"]["after"] < prune["steps"][0]["params"]
    assert read(multi_class, "metrics/export.json")["teacher"]["parity_vs_torch"]["top1_agreement"] == 1.0
    bench = read(multi_class, "metrics/benchmark.json")
    for name in ARTIFACTS + ["teacher_resnet18_torch", "teacher_mobilenetv2_torch"]:
        assert bench[name]["test"]["accuracy"] > 0 and bench[name]["params"] > 0, name
    assert bench["teacher_torch"]["params"] == (bench["teacher_resnet18_torch"]["params"]
                                               + bench["teacher_mobilenetv2_torch"]["params"])


def test_multi_label_arrays_run_from_a_teacher_checkpoint(multi_label):
    meta = read(multi_label, "data/processed/meta.json")
    assert meta["task"] == "multi-label" and len(meta["classes"]) == 5
    teacher = read(multi_label, "metrics/teacher.json")
    assert set(teacher["test"]["tuned"]["thresholds"]) == set(meta["classes"])
    weights = teacher["weights"]
    assert weights["source"] == "path" and weights["path"] == START_WEIGHTS and weights["skipped"] == []
    assert weights["sha256"] == hashlib.sha256((multi_label / START_WEIGHTS).read_bytes()).hexdigest()
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
