"""The artifact table agrees with the pipeline that writes the files, and the headline schema with the
benchmark results it is built from."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
import yaml

from lib import artifacts
from lib.artifacts import TABLE

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
MODELS = PurePosixPath("models")


def outs(stage: str) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in STAGES[stage]["outs"]]


def model_outs() -> list[tuple[str, str]]:
    """(stage, path) of every `models/` output of the pipeline."""
    return [(stage, out) for stage in STAGES for out in outs(stage) if PurePosixPath(out).parts[0] == "models"]


def is_folder_out(out: str) -> bool:
    return not PurePosixPath(out).suffix


def test_names_and_files_are_unique():
    assert len(set(artifacts.NAMES)) == len(TABLE)
    assert len({a.file for a in TABLE}) == len(TABLE)


@pytest.mark.parametrize("artifact", TABLE, ids=artifacts.NAMES)
def test_each_file_is_an_output_of_its_stage(artifact):
    path = MODELS / artifact.file
    assert str(path) in outs(artifact.stage) or any(
        is_folder_out(out) and path.is_relative_to(out) for out in outs(artifact.stage))


def test_each_model_file_a_stage_writes_is_one_row():
    for stage, out in model_outs():
        rows = [a for a in TABLE if (MODELS / a.file).is_relative_to(out)]
        if is_folder_out(out):  # a folder of models, e.g. the QAT stage's
            assert rows and all(a.stage == stage for a in rows), out
        else:
            assert [a.stage for a in rows] == [stage], out


def test_the_benchmark_depends_on_every_artifact():
    deps = STAGES["benchmark"]["deps"]
    for artifact in TABLE:
        path = MODELS / artifact.file
        assert str(path) in deps or any(path.is_relative_to(d) for d in deps if is_folder_out(d)), artifact.name


@pytest.mark.parametrize("artifact", TABLE, ids=artifacts.NAMES)
def test_format_matches_the_file_suffix(artifact):
    assert PurePosixPath(artifact.file).suffix == artifacts.FORMATS[artifact.format]


@pytest.mark.parametrize("artifact", TABLE, ids=artifacts.NAMES)
def test_each_network_is_a_torch_checkpoint_of_the_table(artifact):
    torch_files = {a.file for a in TABLE if a.format == "torch"}
    assert artifact.network in torch_files


def test_every_int8_row_names_a_float_source_in_the_table():
    int8 = [a for a in TABLE if a.precision == artifacts.INT8]
    assert int8 and all(a.float_source for a in int8)
    for artifact in int8:
        source = artifacts.by_name(artifact.float_source)
        assert source.precision == artifacts.FP32 and source.network == artifact.network
    assert all(a.float_source is None for a in TABLE if a.precision != artifacts.INT8)


def test_only_the_qat_rows_are_optional():
    assert {a.name for a in TABLE if a.optional} == {"qat_tflite", "qat_onnx"}
    assert artifacts.by_name(artifacts.DEPLOYED).optional is False


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown artifact 'int4_tflite'.*int8_tflite"):
        artifacts.by_name("int4_tflite")


def test_present_keeps_table_order_and_adds_optional_rows_only_when_written(tmp_path):
    required = [a.name for a in TABLE if not a.optional]
    assert [a.name for a in artifacts.present(tmp_path)] == required
    qat_tflite = artifacts.by_name("qat_tflite").path(tmp_path)
    qat_tflite.parent.mkdir()
    qat_tflite.write_bytes(b"model")
    assert [a.name for a in artifacts.present(tmp_path)] == [*required, "qat_tflite"]


def test_a_teacher_member_runs_its_own_network_and_is_not_the_whole_teacher(tmp_path):
    member = artifacts.teacher_member("resnet18", tmp_path / "teacher_resnet18.pt")
    assert member.name == "teacher_resnet18_torch" and member.path("models") == tmp_path / "teacher_resnet18.pt"
    assert member.network == str(tmp_path / "teacher_resnet18.pt")
    names = ["teacher_torch", "teacher_onnx", member.name, "int8_tflite"]
    assert artifacts.teacher_runtimes(names) == ["teacher_torch", "teacher_onnx"]


def result(accuracy: float, size_bytes: int, p50: float, smaller: float, faster: float) -> dict:
    return {"test": {"accuracy": accuracy, "auc": 0.9, "f1_macro": 0.8, "ece": 0.1}, "decision": {"headline": "argmax"},
            "size_bytes": size_bytes, "macs": 1_234_567, "params": 1000, "latency_ms": {"p50": p50, "p90": 2 * p50},
            "vs_teacher": {"smaller_x": smaller, "faster_x": faster, "accuracy_retention_pct": 99.0}}


def test_headline_rounds_the_short_figures_of_each_artifact_in_order():
    results = {"teacher_torch": result(0.9, 2048, 1.23456789, 1.0, 1.0),
               "int8_tflite": result(0.85, 1500, 0.123456789, 1.3653333, 9.99999)}
    headline = artifacts.headline(results)
    assert list(headline) == ["teacher_torch", "int8_tflite"]
    assert list(headline["int8_tflite"]) == list(artifacts.HEADLINE_KEYS)
    assert headline["int8_tflite"] == {"acc": 0.85, "auc": 0.9, "f1": 0.8, "decision": "argmax", "kb": 1.5,
                                       "mmacs": 1.23, "ms": 0.1235, "x_smaller": 1.37, "x_faster": 10.0}


def test_headline_metric_names_a_dvc_exp_show_column():
    assert artifacts.headline_metric(artifacts.DEPLOYED, "acc") == "int8_tflite.acc"
    with pytest.raises(ValueError, match="unknown headline key 'accuracy'.*acc, auc"):
        artifacts.headline_metric("int8_tflite", "accuracy")


def test_measured_keeps_the_artifacts_of_a_benchmark_report():
    report = {"teacher_torch": result(0.9, 2048, 1.0, 1.0, 1.0), "int8_tflite": result(0.8, 512, 0.5, 4.0, 2.0),
              "baseline_majority_class": {"class": "normal", "test": {"accuracy": 0.6}},
              "machine": {"cpu": "x"}, "test_images": 10, "seed": 42, "warnings": []}
    assert list(artifacts.measured(report)) == ["teacher_torch", "int8_tflite"]
