"""lib.config.load_params: the real file loads; every kind of mistake fails fast with a UserError (a ValueError)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest

from lib import models
from lib.config import Params, load_params
from lib.errors import UserError
from conftest import PARAMS_YAML, ROOT


def test_real_params_file_loads():
    params = load_params(PARAMS_YAML)
    models.check_params(params)
    assert isinstance(params, Params)
    assert params.student in models.available() and params.teacher in models.available()
    assert params.dataset.source in ("medmnist", "imagefolder", "arrays")
    assert isinstance(params.train.augment, bool)
    assert isinstance(params.train.lr, float) and params.train.lr > 0
    assert 0.0 <= params.prune.ratio <= 0.95
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 1  # type: ignore[misc]


def test_unmodified_copy_loads_identically(params_dict, write_params):
    assert load_params(write_params(params_dict)) == load_params(PARAMS_YAML)


def test_missing_params_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_unknown_model_name_lists_valid_names(params_dict, write_params, role):
    params_dict[role] = "mobilenet_v9"
    params = load_params(write_params(params_dict))  # names are the registry's to check, not lib.config's
    with pytest.raises(UserError) as err:
        models.check_params(params)
    message = str(err.value)
    assert role in message and "mobilenet_v9" in message
    for name in models.available():
        assert name in message


@pytest.mark.parametrize("section, key, value", [
    ("prune", "ratio", 1.5),
    ("distill", "alpha", -0.1),
    ("train", "epochs", 0),
    ("dataset", "test_fraction", 0.0),   # lower bound is open
    ("export", "opset", 17),
    ("train", "lr", 0),
    ("quantize", "qat_epochs", 0),
])
def test_out_of_range_value_names_the_key(params_dict, write_params, section, key, value):
    params_dict[section][key] = value
    with pytest.raises(ValueError, match=rf"{section}\.{key}"):
        load_params(write_params(params_dict))


def test_out_of_range_top_level_seed(params_dict, write_params):
    params_dict["seed"] = -1
    with pytest.raises(ValueError, match="seed"):
        load_params(write_params(params_dict))


@pytest.mark.parametrize("section, key, value", [
    ("train", "batch_size", "big"),
    ("train", "augment", "yes"),
    ("train", "epochs", 2.5),            # float for an int
    ("train", "batch_size", True),       # bool is not an int here
    ("distill", "temperature", "hot"),
    ("quantize", "int8_io", 1),          # int is not a bool
    ("quantize", "method", "QAT"),       # one of ptq | qat
])
def test_wrong_type_names_the_key(params_dict, write_params, section, key, value):
    params_dict[section][key] = value
    with pytest.raises(ValueError, match=rf"{section}\.{key}"):
        load_params(write_params(params_dict))


def test_int_is_accepted_for_float_field(params_dict, write_params):
    params_dict["distill"]["temperature"] = 3
    params = load_params(write_params(params_dict))
    assert params.distill.temperature == 3.0 and isinstance(params.distill.temperature, float)


def test_exponent_notation_learning_rate_is_a_number(params_dict, write_params, tmp_path):
    """`lr: 1e-3` is a number in YAML 1.2 (and to DVC's own params parser); PyYAML reads it as a string."""
    path = write_params(params_dict)
    text = path.read_text()
    assert "lr: 0.002" in text
    path.write_text(text.replace("lr: 0.002", "lr: 1e-3", 1))
    params = load_params(path)
    assert params.train.lr == pytest.approx(1e-3)


def test_unknown_nested_key_is_named(params_dict, write_params):
    params_dict["train"]["lrr"] = 0.1
    with pytest.raises(ValueError, match=r"train\.lrr"):
        load_params(write_params(params_dict))


def test_unknown_top_level_key_is_named(params_dict, write_params):
    params_dict["trian"] = {"epochs": 1}
    with pytest.raises(ValueError, match="trian"):
        load_params(write_params(params_dict))


def test_missing_key_raises(params_dict, write_params):
    del params_dict["train"]["lr"]
    with pytest.raises(ValueError, match=r"train\.lr\b.*missing"):
        load_params(write_params(params_dict))


def test_missing_section_raises(params_dict, write_params):
    del params_dict["prune"]
    with pytest.raises(ValueError, match="prune"):
        load_params(write_params(params_dict))


def test_section_that_is_not_a_mapping_raises(params_dict, write_params):
    params_dict["train"] = 5
    with pytest.raises(ValueError, match="train"):
        load_params(write_params(params_dict))


def test_invalid_literal_lists_choices(params_dict, write_params):
    params_dict["device"] = "tpu"
    with pytest.raises(ValueError) as err:
        load_params(write_params(params_dict))
    message = str(err.value)
    assert "device" in message and "tpu" in message
    for choice in ("auto", "cpu", "cuda"):
        assert choice in message


def test_invalid_nested_literal_lists_choices(params_dict, write_params):
    params_dict["train"]["monitor"] = "loss"
    with pytest.raises(ValueError, match=r"train\.monitor.*balanced_accuracy"):
        load_params(write_params(params_dict))


def test_imagefolder_with_nonexistent_root_raises(params_dict, write_params, tmp_path):
    params_dict["dataset"].update(source="imagefolder", root=str(tmp_path / "no_such_dir"))
    with pytest.raises(ValueError, match="no_such_dir"):
        load_params(write_params(params_dict))


def test_imagefolder_with_existing_root_loads(params_dict, write_params, tmp_path):
    (tmp_path / "images").mkdir()
    params_dict["dataset"].update(source="imagefolder", root=str(tmp_path / "images"))
    assert load_params(write_params(params_dict)).dataset.source == "imagefolder"


def test_medmnist_without_name_raises(params_dict, write_params):
    params_dict["dataset"].pop("name")
    with pytest.raises(ValueError, match="dataset.name"):
        load_params(write_params(params_dict))


def test_validation_of_invalid_file_is_fast(params_dict, write_params):
    params_dict["prune"]["ratio"] = 1.5
    path = write_params(params_dict)
    start = time.perf_counter()
    with pytest.raises(ValueError):
        load_params(path)
    assert time.perf_counter() - start < 1.0


def test_config_imports_no_model_or_training_code():
    """Loading params (every stage's first step, prepare_data's too) must not pull in torch or the registry."""
    code = ("import sys; from lib.config import load_params; load_params(); "
            "print(sorted(m for m in ('torch', 'lib.models', 'lib.training') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

