"""End to end: the real DAG (`dvc repro`) on a tiny configuration, in a throwaway git repository."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run

ARTIFACTS = ["teacher_torch", "teacher_onnx", "student_torch", "pruned_torch", "pruned_onnx",
             "float32_tflite", "dynamic_tflite", "int8_tflite", "int8_onnx"]


def test_repro_writes_every_artifact_and_is_up_to_date(project):
    for name in ("teacher.pt", "student.pt", "student_pruned.pt", "student.onnx", "teacher.onnx",
                 "student_float32.tflite", "student_dynamic.tflite", "student_int8.tflite", "student_int8.onnx"):
        assert (project / "models" / name).stat().st_size > 0, name
    assert json.loads((project / "metrics/qat.json").read_text()) == {"method": "ptq"}
    # PTQ: the qat stage trains nothing and writes only a note, so DVC has no empty output to warn about
    assert [p.name for p in (project / "models/qat").iterdir()] == ["README.txt"]
    status = run(["dvc", "status", "--json"], project)
    assert json.loads(status.stdout) == {}


def test_stage_log_has_no_converter_dumps(project):
    log = (project / ".dvc/tmp/repro.log").read_text()
    assert "TensorSpec" not in log
    assert "is empty" not in log
    assert "Running stage 'benchmark'" in log


def test_prepared_data_records_the_arrays_source(project):
    meta = json.loads((project / "data/processed/meta.json").read_text())
    assert meta["classes"] == ["normal", "pneumonia"]
    assert meta["counts"]["train"] == {"normal": 120, "pneumonia": 120}
    assert meta["test_split"] == "provided by the source"


def test_training_metrics_have_stable_keys(project):
    for stage in ("teacher", "student"):
        metrics = json.loads((project / f"metrics/{stage}.json").read_text())
        for split in ("val", "test"):
            assert set(metrics[split]) >= {"accuracy", "balanced_accuracy", "auc", "f1_macro", "per_class"}
            assert 0.0 <= metrics[split]["accuracy"] <= 1.0


def test_pruning_shrinks_the_student_and_exports_agree(project):
    prune = json.loads((project / "metrics/prune.json").read_text())
    assert prune["params"]["removed_fraction"] >= 0.5
    assert prune["macs"]["after"] < prune["macs"]["before"]
    export = json.loads((project / "metrics/export.json").read_text())
    for role in ("student", "teacher"):
        assert export[role]["parity_vs_torch"]["top1_agreement"] == 1.0
    tflite = json.loads((project / "metrics/tflite.json").read_text())
    assert tflite["parity_vs_onnx"]["top1_agreement"] >= 0.999
    quantize = json.loads((project / "metrics/quantize.json").read_text())
    assert quantize["int8"]["size_bytes"] < quantize["float32"]["size_bytes"]


def test_benchmark_reports_every_artifact(project):
    bench = json.loads((project / "metrics/benchmark.json").read_text())
    for name in ARTIFACTS:
        result = bench[name]
        assert set(result["test"]) >= {"accuracy", "balanced_accuracy", "auc", "f1_macro", "ece",
                                       "per_class", "ci95"}
        lo, hi = result["test"]["ci95"]["accuracy"]
        assert lo <= result["test"]["accuracy"] <= hi
        assert result["size_bytes"] > 0 and result["params"] > 0 and result["macs"] > 0
        assert result["latency_ms"]["p50"] > 0 and result["latency_ms"]["threads"] == 1
        assert result["latency_ms"]["p90"] >= result["latency_ms"]["p50"]
        assert result["throughput"]["images_per_s"] > 0
        assert set(result["vs_teacher"]) == {"smaller_x", "faster_x", "accuracy_retention_pct"}
    assert bench["baseline_majority_class"]["test"]["accuracy"] == pytest.approx(0.5)
    assert not [name for name in bench if name.startswith("qat_")]


def test_metrics_and_plots_are_readable_by_dvc(project):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    assert "int8_tflite" in json.dumps(shown)
    predictions = (project / "plots/benchmark/predictions.csv").read_text().splitlines()
    assert len(predictions) == 1 + len(ARTIFACTS) * 80
    run(["dvc", "plots", "show", "--out", "dvc_plots"], project)
    page = (project / "dvc_plots/index.html").read_text()
    for title in ("ROC curves of every artifact", "Confusion matrix, teacher", "Accuracy vs size on disk",
                  "Accuracy vs batch-1 latency", "Training loss"):
        assert title in page
    assert '"type": "log"' in page  # the trade-off plots use the project's log-scale template


def test_int8_model_computes_in_int8(project):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(project / "models/student_int8.tflite"))
    dtypes = [t["dtype"] for t in interpreter.get_tensor_details()]
    int8 = sum(d == np.int8 for d in dtypes)
    assert int8 > 0.5 * len(dtypes), f"only {int8} of {len(dtypes)} tensors are int8"
    dynamic = Interpreter(model_path=str(project / "models/student_dynamic.tflite"))
    assert any(t["dtype"] == np.int8 for t in dynamic.get_tensor_details())
