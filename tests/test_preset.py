"""Named presets (lib.preset): each committed preset is a recipe the stages accept, and a broken one says what
to fix before anything runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lib.errors import UserError
from lib.preset import PRESETS, command, load_preset, main, names, summary

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", names(ROOT / PRESETS))
def test_every_committed_preset_is_a_recipe_the_stages_accept_and_says_what_it_is(name):
    preset = load_preset(name, ROOT / PRESETS, ROOT / "params.yaml")
    assert command(preset)[:3] == ["dvc", "exp", "run"] and len(command(preset)) == 3 + 2 * len(preset)
    assert summary(ROOT / PRESETS / f"{name}.yaml"), "a preset's first comment line says what it is"


def test_a_preset_s_command_sets_each_of_its_keys_as_dvc_exp_run_takes_them():
    assert command({"train.epochs": 12, "student": "mobilenetv2", "teacher": ["resnet18", "densenet121"]}) == [
        "dvc", "exp", "run", "-S", "train.epochs=12", "-S", "student=mobilenetv2",
        "-S", 'teacher=["resnet18", "densenet121"]']


@pytest.mark.parametrize("text, message", [
    ("train.epoch: 12\n", "'train.epoch' is not a key of params.yaml"),
    ("seed: 7\n", "leaves the seed to params.yaml"),
    ("train.epochs: 0\n", "train.epochs"),
    ("student: mobilenetv3_small\nstudent_width: 0.35\n", "student_width"),
    ("student: resnet1000\n", "resnet1000"),
    ("[train.epochs, 12]\n", "expected a mapping"),
    ("train.epochs: [12\n", "not valid YAML"),
])
def test_a_broken_preset_says_what_to_fix(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        load_preset("bad", tmp_path, ROOT / "params.yaml")


def test_an_unknown_preset_names_the_ones_there_are(tmp_path):
    (tmp_path / "tiny.yaml").write_text("# A tiny one\nstudent_width: 0.35\n")
    with pytest.raises(UserError, match=re.escape("preset 'huge' not found") + ".*the presets are: tiny"):
        load_preset("huge", tmp_path, ROOT / "params.yaml")
    assert summary(tmp_path / "tiny.yaml") == "A tiny one"


def test_dry_run_prints_the_command_and_the_bare_command_lists_the_presets(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    name = names()[0]
    main([name, "--dry-run"])
    assert capsys.readouterr().out.strip() == " ".join(command(load_preset(name)))
    main([])
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == names()
    assert yaml.safe_load((ROOT / "params.yaml").read_text())  # nothing above edited params.yaml
