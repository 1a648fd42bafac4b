"""The compression recipe's switches: no pruning, no distillation, iterative pruning, ensemble teachers."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import copy_pipeline, edit_params, tool_env
from lib import losses, models
from lib.config import Params, from_dict
from lib.context import Context
from lib.errors import UserError
from lib.export import export_onnx
from lib.ensemble import Ensemble, ensemble_arch
from lib.models import ModelSpec, build, load_checkpoint, save_checkpoint
from lib.pruning import count_macs_params, prune_channels, prune_steps
from lib.runtimes import onnx_runner, torch_runner
from lib.training import train
from test_distributed import tiny_context


def with_params(ctx: Context, **sections: dict) -> Context:
    """`ctx` with fields of params sections replaced, e.g. `with_params(ctx, prune={"ratio": 0.0})`."""
    params = ctx.params
    for section, values in sections.items():
        params = dataclasses.replace(params, **{section: dataclasses.replace(getattr(params, section), **values)})
    return dataclasses.replace(ctx, params=params)


@pytest.fixture
def ctx() -> Context:
    return with_params(tiny_context(nproc=1), train={"batch_size": 16})


def _no_teacher(*args, **kwargs):
    raise AssertionError("the teacher was loaded")


# ---------------------------------------------------------------- the prune stage, run as a user runs it


def run_prune_stage(repo: Path, **sections: dict) -> dict:
    """`python -m stages.prune` in a copy of the pipeline, on the tiny context's splits written as processed
    data and an 8 px MobileNetV2 student, with no teacher file; returns metrics/prune.json."""
    copy_pipeline(repo)
    edit_params(repo, device="cpu", train={"batch_size": 16, "nproc": 1, "workers": 0, "precision": "fp32"},
                **sections)
    ctx = tiny_context(nproc=1)
    processed = repo / "data/processed"
    processed.mkdir(parents=True)
    for split, (images, labels) in ctx.splits.items():
        np.save(processed / f"{split}_images.npy", images)
        np.save(processed / f"{split}_labels.npy", labels)
    (processed / "meta.json").write_text(json.dumps(ctx.meta))
    torch.manual_seed(0)
    save_checkpoint(ctx.build("mobilenetv2"), ctx.spec("mobilenetv2"), repo / "models/student.pt")
    result = subprocess.run([sys.executable, "-m", "stages.prune"], cwd=repo, capture_output=True, text=True,
                            env={**tool_env(), "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((repo / "metrics/prune.json").read_text())


def epochs_logged(live: Path) -> int:
    """Epochs one `train` call logged into its dvclive folder (the loss curve has a header row)."""
    return len((live / "plots/metrics/train/loss.tsv").read_text().splitlines()) - 1


# ---------------------------------------------------------------- prune.ratio: 0


def test_ratio_zero_passes_the_student_through_unchanged(tmp_path):
    report = run_prune_stage(tmp_path, prune={"ratio": 0.0})  # distill.alpha stays on: no teacher is needed
    student = torch.load(tmp_path / "models/student.pt", weights_only=True)["state_dict"]
    pruned = torch.load(tmp_path / "models/student_pruned.pt", weights_only=True)["state_dict"]
    assert student.keys() == pruned.keys() and all(torch.equal(student[k], pruned[k]) for k in student)
    assert report["params"]["removed_fraction"] == 0 and report["steps"] == []
    assert "skipped" in report["finetune"] and set(report["pruned"]) == {"val", "test"}
    assert report["finetuned"] == report["pruned"]  # not trained
    live = tmp_path / "plots/train/finetune"
    assert live.is_dir() and not any(live.iterdir())  # the stage's output exists, empty


# ---------------------------------------------------------------- distill.alpha: 0


def test_alpha_zero_trains_on_labels_without_loading_the_teacher(ctx, monkeypatch, tmp_path):
    ctx = with_params(ctx, distill={"alpha": 0.0})
    monkeypatch.setattr(losses, "load_checkpoint", _no_teacher)
    criterion = losses.student_criterion(ctx, tmp_path / "missing_teacher.pt")
    assert isinstance(criterion, losses.HardLabelLoss) and not losses.distilling(ctx)
    train(build("mobilenetv2", 2, 1, 8), criterion, ctx, 1, 1e-2, tmp_path / "live", "fp32")


def test_positive_alpha_distils_from_the_teacher_checkpoint(ctx, tmp_path):
    save_checkpoint(ctx.build("resnet18"), ctx.spec("resnet18"), tmp_path / "teacher.pt")
    assert losses.distilling(ctx)
    assert isinstance(losses.student_criterion(ctx, tmp_path / "teacher.pt"), losses.DistillationLoss)


# ---------------------------------------------------------------- iterative pruning


def test_iterative_schedule_reaches_the_target_ratio_linearly():
    torch.manual_seed(0)
    example = torch.zeros(1, 1, 28, 28)
    stepwise = build("mobilenetv2", 2, 1, 28).eval()
    one_shot = build("mobilenetv2", 2, 1, 28).eval()
    ratios, sizes = [], []
    for ratio in prune_steps(stepwise, example, 0.5, "l1", 3, 8):
        ratios.append(ratio)
        sizes.append(count_macs_params(stepwise, example)[1])
    assert ratios == pytest.approx([0.5 / 3, 1 / 3, 0.5])
    assert sizes[0] > sizes[1] > sizes[2]
    prune_channels(one_shot, example, 0.5, "l1", 1, 8)
    assert sizes[-1] == count_macs_params(one_shot, example)[1]  # the same widths as pruning at once


def test_iterative_pruning_fine_tunes_between_steps_only(tmp_path):
    report = run_prune_stage(tmp_path, distill={"alpha": 0.0},
                             prune={"iterative_steps": 3, "step_epochs": 1, "finetune_epochs": 2, "ratio": 0.5})
    assert [s["step"] for s in report["steps"]] == [1, 2, 3]
    assert [s["ratio"] for s in report["steps"]] == pytest.approx([0.5 / 3, 1 / 3, 0.5])
    assert [("finetune" in s) for s in report["steps"]] == [True, True, False]
    assert report["steps"][0]["params"] > report["steps"][-1]["params"] == report["params"]["after"]
    assert not report["distilled"]
    live = tmp_path / "plots/train/finetune"
    # two steps' fine-tunes of step_epochs, then the final one of finetune_epochs: three `train` calls
    assert sorted(p.name for p in live.iterdir() if p.name.startswith("step")) == ["step1", "step2"]
    assert [epochs_logged(live / "step1"), epochs_logged(live / "step2"), epochs_logged(live)] == [1, 1, 2]
    assert report["finetune"]["best_epoch"] in (1, 2)


# ---------------------------------------------------------------- ensemble teachers


@pytest.fixture
def ensemble() -> Ensemble:
    torch.manual_seed(0)
    return Ensemble([build("resnet18", 2, 1, 28), build("mobilenetv2", 2, 1, 28)]).eval()


def test_ensemble_output_softmax_is_the_members_averaged_probabilities(ensemble):
    x = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        averaged = torch.stack([torch.softmax(m(x), dim=1) for m in ensemble.members]).mean(dim=0)
        assert torch.allclose(torch.softmax(ensemble(x), dim=1), averaged, atol=1e-6)
        assert torch.allclose(ensemble(x).exp().sum(dim=1), torch.ones(4), atol=1e-5)


def test_distillation_from_an_ensemble_averages_soft_targets_not_logits(ensemble, ctx):
    ctx = with_params(ctx, distill={"alpha": 1.0, "temperature": 3.0})
    criterion = losses.distillation_criterion(ctx, ensemble)
    x, student = torch.randn(5, 1, 28, 28), torch.randn(5, 2)
    with torch.inference_mode():
        targets = torch.stack([torch.softmax(m(x) / 3.0, dim=1) for m in ensemble.members]).mean(dim=0)
        mean_logits = torch.stack([m(x) for m in ensemble.members]).mean(dim=0)
    expected = 9.0 * (targets * (targets.log() - torch.log_softmax(student / 3.0, dim=1))).sum(dim=1).mean()
    loss = criterion(student, x, torch.zeros(5, dtype=torch.long))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert not torch.allclose(targets, torch.softmax(mean_logits / 3.0, dim=1), atol=1e-3)
    assert ensemble.temperature == 1.0  # the checkpointed teacher is untouched


def test_ensemble_checkpoint_records_members_and_reloads_with_weights_only(ensemble, tmp_path):
    spec = ModelSpec(ensemble_arch(["resnet18", "mobilenetv2"]), 2, 1, 28)
    save_checkpoint(ensemble, spec, tmp_path / "teacher.pt")
    assert torch.load(tmp_path / "teacher.pt", weights_only=True)["spec"]["arch"] == "resnet18+mobilenetv2"
    loaded, loaded_spec = load_checkpoint(tmp_path / "teacher.pt")
    x = torch.randn(2, 1, 28, 28)
    assert isinstance(loaded, Ensemble) and loaded_spec == spec
    with torch.inference_mode():
        assert torch.equal(loaded(x), ensemble(x))


def test_single_teacher_checkpoint_format_is_unchanged(tmp_path):
    save_checkpoint(build("resnet18", 2, 1, 28), ModelSpec("resnet18", 2, 1, 28), tmp_path / "t.pt")
    ckpt = torch.load(tmp_path / "t.pt", weights_only=True)
    assert set(ckpt) == {"spec", "layers", "state_dict"} and ckpt["spec"]["arch"] == "resnet18"
    assert not any(key.startswith("members.") for key in ckpt["state_dict"])


def test_ensemble_exports_to_onnx_that_matches_torch(ensemble, tmp_path):
    export_onnx(ensemble, torch.zeros(1, 1, 28, 28), tmp_path / "e.onnx", opset=18)
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(onnx_runner(tmp_path / "e.onnx", threads=1)(x), torch_runner(ensemble)(x),
                               rtol=1e-3, atol=1e-4)


def test_benchmark_lists_each_member_of_an_ensemble_teacher(ensemble, tmp_path):
    from lib.benchmark import teacher_members

    save_checkpoint(ensemble, ModelSpec("resnet18+mobilenetv2", 2, 1, 28), tmp_path / "teacher.pt")
    members = teacher_members(tmp_path, tmp_path / "members")
    assert [m.name for m in members] == ["teacher_resnet18_torch", "teacher_mobilenetv2_torch"]
    assert all(m.network == m.file for m in members)  # its own MACs, not the ensemble's
    member, spec = load_checkpoint(members[1].path(tmp_path))
    assert spec.arch == "mobilenetv2"
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(member(x), ensemble.members[1](x))
    save_checkpoint(ensemble.members[0], ModelSpec("resnet18", 2, 1, 28), tmp_path / "teacher.pt")
    assert teacher_members(tmp_path, tmp_path / "members") == []


@pytest.mark.parametrize("teacher, problem", [
    ([], "two or more different models"), (["resnet18"], "two or more different models"),
    (["resnet18", "resnet18"], "each once"), (["resnet18", "resnet1"], "unknown model 'resnet1'"),
    (["resnet18", 7], "teacher[1]: got 7; expected a string")])
def test_invalid_ensemble_teachers_are_user_errors(params_dict, teacher, problem):
    params_dict["teacher"] = teacher
    with pytest.raises(UserError, match=re.escape(problem)):  # the list's shape: lib.config; names: the registry
        models.check_params(from_dict(Params, params_dict))


def test_ensemble_teacher_lists_its_members(params_dict):
    params_dict["teacher"] = ["resnet18", "densenet121"]
    params = from_dict(Params, params_dict)
    models.check_params(params)
    assert params.teachers == ("resnet18", "densenet121")
