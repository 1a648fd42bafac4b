"""End to end: `dvc repro` of the real DAG with each compression switch flipped, on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run, tiny_project, tiny_settings
from test_pipeline_e2e import ARTIFACTS

SPLITS = {"train": 160, "val": 40, "test": 40}


def repro(repo: Path) -> Path:
    run(["dvc", "repro"], repo)
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}
    return repo


def metrics(repo: Path, stage: str) -> dict:
    return json.loads((repo / f"metrics/{stage}.json").read_text())


@pytest.fixture(scope="module")
def no_pruning_no_distillation(tmp_path_factory) -> Path:
    return repro(tiny_project(tmp_path_factory.mktemp("ablation"), SPLITS,
                              **tiny_settings(prune={"ratio": 0.0}, distill={"alpha": 0.0})))


@pytest.fixture(scope="module")
def ensemble_iterative(tmp_path_factory) -> Path:
    return repro(tiny_project(tmp_path_factory.mktemp("ensemble"), SPLITS, teacher=["resnet18", "mobilenetv2"],
                              **tiny_settings(prune={"iterative_steps": 2})))


def test_ratio_zero_and_alpha_zero_run_the_whole_chain(no_pruning_no_distillation):
    repo = no_pruning_no_distillation
    assert metrics(repo, "student")["distilled"] is False
    prune = metrics(repo, "prune")
    assert prune["params"]["removed_fraction"] == 0 and prune["macs"]["after"] == prune["macs"]["before"]
    assert "skipped" in prune["finetune"] and prune["finetuned"] == prune["pruned"]
    student = torch.load(repo / "models/student.pt", weights_only=True)["state_dict"]
    pruned = torch.load(repo / "models/student_pruned.pt", weights_only=True)["state_dict"]
    assert student.keys() == pruned.keys() and all(torch.equal(student[k], pruned[k]) for k in student)
    assert set(metrics(repo, "benchmark")) >= set(ARTIFACTS)


def test_ensemble_teacher_and_iterative_pruning_run_the_whole_chain(ensemble_iterative):
    repo = ensemble_iterative
    teacher = metrics(repo, "teacher")
    assert teacher["model"] == "resnet18+mobilenetv2"
    assert {arch: m["seed"] for arch, m in teacher["members"].items()} == {"resnet18": 42, "mobilenetv2": 43}
    assert all("auc" in m["test"] for m in teacher["members"].values())
    prune = metrics(repo, "prune")
    assert [s["ratio"] for s in prune["steps"]] == pytest.approx([0.25, 0.5])
    assert "finetune" in prune["steps"][0] and "finetune" not in prune["steps"][1]
    assert prune["steps"][1]["params"] == prune["params"]["after"] < prune["steps"][0]["params"]
    assert metrics(repo, "export")["teacher"]["parity_vs_torch"]["top1_agreement"] == 1.0
    bench = metrics(repo, "benchmark")
    for name in ARTIFACTS + ["teacher_resnet18_torch", "teacher_mobilenetv2_torch"]:
        assert bench[name]["test"]["accuracy"] > 0 and bench[name]["params"] > 0, name
    assert bench["teacher_torch"]["params"] == (bench["teacher_resnet18_torch"]["params"]
                                               + bench["teacher_mobilenetv2_torch"]["params"])
