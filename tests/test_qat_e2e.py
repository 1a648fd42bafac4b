"""End to end: `quantize.method: qat` on the tiny project that `dvc repro` already ran with the default
(PTQ), as a user switching recipe would (`dvc exp run -S quantize.method=qat` runs the same stages)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import REPRO_LOG, copy_project, edit_params, own_copy, repro, run


def switch_to_qat(project: Path, repo: Path) -> Path:
    """A copy of the PTQ project (cache included), switched to QAT and reproduced."""
    copy_project(project, repo)
    edit_params(repo, quantize={"method": "qat", "qat_epochs": 1})
    return repro(repo)


@pytest.fixture(scope="module")
def qat_project(project, tmp_path_factory):
    """This worker's copy of the QAT project (built once per session) and its repro log."""
    repo = own_copy(tmp_path_factory, "qat", lambda folder: switch_to_qat(project, folder))
    return repo, (repo / REPRO_LOG).read_text()


def test_switching_method_reruns_only_qat_and_what_reads_it(qat_project):
    repo, log = qat_project
    assert re.findall(r"Running stage '(\w+)'", log) == ["qat", "benchmark", "bundle"]
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}


def test_qat_int8_artifacts_reproduce_their_float_models(qat_project):
    repo, _ = qat_project
    report = json.loads((repo / "metrics/qat.json").read_text())
    assert report["method"] == "qat" and report["finetune"]["best_epoch"] == 1
    assert report["int8_onnx"]["agreement_vs_fake_quant"]["top1_agreement"] >= 0.99
    assert report["int8_tflite"]["agreement_vs_float32"]["top1_agreement"] >= 0.9
    ptq = json.loads((repo / "metrics/quantize.json").read_text())
    assert report["int8_onnx"]["size_bytes"] < 1.2 * ptq["int8_onnx"]["size_bytes"]  # int8 weights on disk


def test_qat_tflite_computes_in_int8(qat_project):
    from ai_edge_litert.interpreter import Interpreter

    repo, _ = qat_project
    interpreter = Interpreter(model_path=str(repo / "models/qat/student_qat_int8.tflite"))
    dtypes = [t["dtype"] for t in interpreter.get_tensor_details()]
    assert sum(d == np.int8 for d in dtypes) > 0.5 * len(dtypes)


def test_benchmark_reports_qat_beside_ptq(qat_project):
    repo, _ = qat_project
    bench = json.loads((repo / "metrics/benchmark.json").read_text())
    for name in ("qat_tflite", "qat_onnx"):
        assert set(bench[name]) == set(bench["int8_tflite"])
        assert bench[name]["size_bytes"] > 0 and bench[name]["latency_ms"]["p50"] > 0
    headline = json.loads((repo / "metrics/headline.json").read_text())
    assert {"int8_tflite", "int8_onnx", "qat_tflite", "qat_onnx"} <= set(headline)
