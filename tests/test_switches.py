"""The compression recipe's switches: no pruning, no distillation, iterative pruning, ensemble teachers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lib import experiment
from lib.models import build
from lib.pruning import count_macs_params, prune_channels, prune_steps
from lib.training import DistillationLoss, HardLabelLoss
from stages import prune
from test_distributed import tiny_context


def with_params(ctx: experiment.Context, **sections: dict) -> experiment.Context:
    """`ctx` with fields of params sections replaced, e.g. `with_params(ctx, prune={"ratio": 0.0})`."""
    params = ctx.params
    for section, values in sections.items():
        params = dataclasses.replace(params, **{section: dataclasses.replace(getattr(params, section), **values)})
    return dataclasses.replace(ctx, params=params)


@pytest.fixture
def ctx() -> experiment.Context:
    return with_params(tiny_context(nproc=1), train={"batch_size": 16})


def _no_teacher(*args, **kwargs):
    raise AssertionError("the teacher was loaded")


# ---------------------------------------------------------------- prune.ratio: 0


def test_ratio_zero_passes_the_student_through_unchanged(ctx, tmp_path):
    model = build("mobilenetv2", 2, 1, 8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out, report = prune.passthrough(model, ctx, str(tmp_path / "live"))
    assert out is model
    assert all(torch.equal(before[k], v) for k, v in out.state_dict().items())
    assert "skipped" in report["finetune"] and set(report["pruned"]) == {"val", "test"}
    assert (tmp_path / "live").is_dir()


# ---------------------------------------------------------------- distill.alpha: 0


def test_alpha_zero_trains_on_labels_without_loading_the_teacher(ctx, monkeypatch, tmp_path):
    ctx = with_params(ctx, distill={"alpha": 0.0})
    monkeypatch.setattr(experiment, "load_checkpoint", _no_teacher)
    criterion = experiment.student_criterion(ctx, tmp_path / "missing_teacher.pt")
    assert isinstance(criterion, HardLabelLoss) and not experiment.distilling(ctx)
    experiment.train(build("mobilenetv2", 2, 1, 8), criterion, ctx, 1, 1e-2, tmp_path / "live", "fp32")


def test_positive_alpha_distils_from_the_teacher_checkpoint(ctx, tmp_path):
    from lib.models import save_checkpoint

    save_checkpoint(ctx.build("resnet18"), ctx.spec("resnet18"), tmp_path / "teacher.pt")
    assert isinstance(experiment.student_criterion(ctx, tmp_path / "teacher.pt"), DistillationLoss)


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


def test_iterative_pruning_fine_tunes_between_steps_only(ctx, tmp_path, monkeypatch):
    ctx = with_params(ctx, prune={"iterative_steps": 3, "step_epochs": 1, "finetune_epochs": 1, "ratio": 0.5},
                      distill={"alpha": 0.0})
    calls = []
    real_train = experiment.train
    monkeypatch.setattr(prune, "train", lambda *a, **k: calls.append(a[3]) or real_train(*a, **k))
    model, report = prune.prune_and_finetune(ctx.build("mobilenetv2"), ctx, "unused.pt", str(tmp_path / "live"))
    assert calls == [1, 1, 1]  # two steps' fine-tunes, then the final one
    assert [s["step"] for s in report["steps"]] == [1, 2, 3]
    assert [("finetune" in s) for s in report["steps"]] == [True, True, False]
    assert report["steps"][0]["params"] > report["steps"][-1]["params"]
    assert not report["distilled"]
    assert (tmp_path / "live/step1/plots").is_dir() and (tmp_path / "live/plots").is_dir()
