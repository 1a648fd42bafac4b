"""A mistake a user can fix is one line on stderr saying what to do; a bug keeps its traceback."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib import sources
from lib.cli import EXIT_USER_ERROR, run
from lib.config import load_params
from lib.errors import UserError
from lib.runtimes import predict
from conftest import ROOT, copy_pipeline, edit_params, init_repo, random_bytes, tool_env, truncated_onnx

META = {"classes": ["a", "b"], "mean": [0.5], "std": [0.25], "channels": 1, "image_size": 4}
IMAGES = np.zeros((2, 4, 4, 1), dtype=np.uint8)


def run_cmd(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a user's command and return its result, failed or not."""
    return subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def project(tmp_path) -> Path:
    """The stages, lib and params in a throwaway folder, as a user's checkout has them."""
    copy_pipeline(tmp_path)
    (tmp_path / "data/raw").mkdir(parents=True)
    return tmp_path


def prepare_data(project: Path) -> subprocess.CompletedProcess:
    return run_cmd([sys.executable, "-m", "stages.prepare_data", "--out", "data/processed"], project)


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_yaml_syntax_error_is_one_line_naming_file_line_and_column(project):
    text = (project / "params.yaml").read_text().replace("  epochs: 6", "  epochs: 6: 7", 1)
    (project / "params.yaml").write_text(text)
    line = text.splitlines().index("  epochs: 6: 7") + 1
    message = assert_one_line_error(prepare_data(project))
    assert message.startswith(f"error: params.yaml is not valid YAML: line {line}, column 12: "), message


def test_out_of_range_value_is_one_line_naming_key_and_range(project):
    edit_params(project, prune={"ratio": 1.5})
    message = assert_one_line_error(prepare_data(project))
    assert "prune.ratio" in message and "1.5" in message and "[0.0, 0.95]" in message


def test_misspelled_key_stops_dvc_repro_before_any_training(project):
    init_repo(project)
    edit_params(project, trian={"epochs": 1})  # what `dvc exp run -S +trian.epochs=1` writes
    result = run_cmd(["dvc", "repro"], project)
    assert result.returncode != 0
    assert "error: params: unknown key(s) trian" in result.stderr
    assert "Running stage 'train_teacher'" not in result.stdout
    assert not (project / "models/teacher.pt").exists()


def test_misspelled_set_param_is_refused_by_dvc(project):
    init_repo(project)
    result = run_cmd(["dvc", "exp", "run", "-S", "trian.epochs=1"], project)
    assert result.returncode != 0 and "trian" in result.stderr
    assert "Running stage" not in result.stdout


def test_yaml_error_message_has_one_based_position(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\ntrain:\n\tepochs: 6\n")
    with pytest.raises(UserError, match=r"params\.yaml is not valid YAML: line 3, column 1: ") as err:
        load_params(path)
    assert "\n" not in str(err.value)


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(UserError, match="nope.yaml not found: run the stage from the project root"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name, content", [
    ("student.onnx", truncated_onnx()),
    ("teacher.onnx", random_bytes()),
    ("student_float32.tflite", random_bytes()),
    ("student_int8.tflite", b"\x1c\0\0\0TFL3" + random_bytes()),  # TFLite's identifier over garbage
    ("student_dynamic.tflite", b""),
])
def test_corrupt_model_file_names_file_and_how_to_recreate(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        predict(path, IMAGES, META)
    message = str(err.value)
    assert str(path) in message and "dvc repro" in message and "\n" not in message


def test_missing_artifact_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        predict(tmp_path / "student.onnx", IMAGES, META)


def test_user_error_prints_one_line_and_exits_2(capsys):
    def main():
        raise UserError("prune.ratio: got 1.5; expected a value in [0.0, 0.95]")

    with pytest.raises(SystemExit) as exit_:
        run(main)
    assert exit_.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: prune.ratio: got 1.5; expected a value in [0.0, 0.95]\n"


def test_bug_in_a_stage_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(*_):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(sources, "load_source", broken)
    monkeypatch.setattr(sys, "argv", ["prepare_data", "--out", str(tmp_path / "processed")])
    monkeypatch.chdir(ROOT)
    with pytest.raises(RuntimeError, match="a bug"):
        runpy.run_module("stages.prepare_data", run_name="__main__")
