"""The training levers, each off by default: the weights' moving average (lib.schedules, lib.training), MixUp
and CutMix with soft targets and the per-image policy (lib.augment, lib.loader, lib.losses), the cosine
schedule (lib.schedules), their params (lib.config, lib.task); and the default path entering none of them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate
from torchvision.transforms import v2

from conftest import PARAMS_YAML
from lib import augment, schedules
from lib.compute import Compute, seed_everything
from lib.config import load_params
from lib.context import Context
from lib.errors import UserError
from lib.loader import ImageDataset, make_loader
from lib.losses import DistillationLoss, HardLabelLoss, kd_loss
from lib.task import MultiLabel, SingleLabel
from lib.training import Schedule, fit, train

CPU = Compute(torch.device("cpu"))
TWO = SingleLabel(["dark", "bright"])
META = {"classes": ["dark", "bright"], "mean": [0.5], "std": [0.35], "channels": 1, "image_size": 8}


def toy_split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = np.where(labels[:, None, None, None] == 0, rng.integers(0, 90, (n, 8, 8, 1)),
                      rng.integers(160, 256, (n, 8, 8, 1))).astype(np.uint8)
    return images, labels.astype(np.int64)


def tiny_net() -> nn.Module:
    """A convolution, a batch norm (buffers to average) and a classifier: trains in milliseconds."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def float_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


# ------------------------------------------------------------------ EMA of the weights
class RecordingAverage(torch.optim.swa_utils.AveragedModel):
    """The averaged model `fit` builds, recording the live weights it is handed at every step."""
    made: list["RecordingAverage"] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.live: list[dict[str, torch.Tensor]] = []
        RecordingAverage.made.append(self)

    def update_parameters(self, model: nn.Module) -> None:
        self.live.append(float_state(model))
        super().update_parameters(model)


def fit_tiny(schedule: Schedule, **loader_levers) -> tuple[nn.Module, dict]:
    seed_everything(0)
    loader = make_loader(*toy_split(16), META, batch_size=4, shuffle=True, augment=True, seed=0, **loader_levers)
    return fit(tiny_net(), HardLabelLoss(TWO), loader, toy_split(8, seed=1), META, schedule, CPU)


def test_fit_validates_and_returns_the_moving_average(monkeypatch):
    RecordingAverage.made.clear()
    monkeypatch.setattr(schedules, "AveragedModel", RecordingAverage)
    decay = 0.2  # below the warm-up's (1 + n) / (10 + n) from the second update on
    model, info = fit_tiny(Schedule(epochs=1, lr=0.05, weight_decay=0.0, monitor="auc", ema_decay=decay))
    (average,) = RecordingAverage.made
    assert len(average.live) == 4 and info["best_epoch"] == 1  # one update per optimizer step
    expected = average.live[0]
    for n, live in enumerate(average.live[1:], 1):  # EMA_0 = w_1, EMA_n = d_n·EMA_{n-1} + (1 − d_n)·w_{n+1}
        d = min(decay, (1 + n) / (10 + n))  # 2/11, then the ceiling 0.2
        expected = {k: d * expected[k] + (1 - d) * live[k] for k in expected}
    returned, last_live = float_state(model), average.live[-1]
    for key in expected:
        assert torch.allclose(returned[key], expected[key], atol=1e-6), key
    assert any(not torch.allclose(returned[k], last_live[k]) for k in returned)  # not the live weights
    assert "1.running_mean" in returned  # batch-norm statistics are averaged too


def test_the_average_warms_up_so_a_short_run_does_not_keep_its_first_weights():
    first, live = [torch.zeros(3)], [torch.ones(3)]
    update = schedules.warmed_up_ema(0.99)
    update(first, live, torch.tensor(1))  # the first update after the copy: decay 2/11, not 0.99
    assert torch.allclose(first[0], torch.full((3,), 9 / 11))
    late = [torch.zeros(3)]
    update(late, live, torch.tensor(10_000))  # long after the warm-up: the ceiling
    assert torch.allclose(late[0], torch.full((3,), 0.01))


def test_without_ema_no_average_is_made():
    assert schedules.weight_average(tiny_net(), 0.0) is None


# ------------------------------------------------------------------ MixUp, CutMix, soft targets
def test_mixup_gives_soft_targets_summing_to_one():
    torch.manual_seed(0)
    images, labels = next(iter(make_loader(*toy_split(16), META, 16, mixup_alpha=0.4)))
    plain, _ = next(iter(make_loader(*toy_split(16), META, 16)))
    assert labels.shape == (16, 2) and labels.dtype == torch.float32
    assert torch.allclose(labels.sum(dim=1), torch.ones(16))
    assert ((labels > 0) & (labels < 1)).any()  # mixed, not one-hot
    assert not torch.equal(images, plain)


def test_cutmix_pastes_a_box_and_weighs_labels_by_its_area():
    n = 4
    images = np.stack([np.full((8, 8, 1), 40 * i, np.uint8) for i in range(n)])  # one flat value per image
    meta = {**META, "classes": [str(i) for i in range(n)]}
    torch.manual_seed(3)
    mixed, targets = next(iter(make_loader(images, np.arange(n), meta, n, cutmix_alpha=1.0)))
    plain, _ = next(iter(make_loader(images, np.arange(n), meta, n)))
    own = mixed == plain
    pasted = mixed == plain.roll(1, 0)  # CutMix pastes from the previous image of the batch
    assert (own | pasted).all() and pasted.any()
    share_own = own.float().mean(dim=(1, 2, 3))
    assert torch.allclose(targets[torch.arange(n), torch.arange(n)], share_own)
    assert torch.allclose(targets.sum(dim=1), torch.ones(n))


def test_with_mixing_off_the_batch_is_todays_bit_for_bit():
    """Today's collate: stack the samples, then the affine jitter; same pixels, same random numbers drawn."""
    data = toy_split(8)
    loader = make_loader(*data, META, 8, augment=True)
    assert loader.collate_fn.mix is None
    dataset = ImageDataset(*data, META)
    torch.manual_seed(0)
    expected_images, expected_labels = default_collate([dataset[i] for i in range(8)])
    expected_images = loader.collate_fn.affine(expected_images)
    expected_rng = torch.get_rng_state()
    torch.manual_seed(0)
    images, labels = next(iter(loader))
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert make_loader(*data, META, 8).collate_fn is default_collate  # nothing on: torch's own collate


def test_both_alphas_pick_mixup_or_cutmix_per_batch():
    mixing = augment.batch_mixing(0.2, 1.0, 2)
    assert isinstance(mixing, v2.RandomChoice)
    assert [type(t) for t in mixing.transforms] == [v2.MixUp, v2.CutMix]
    assert augment.batch_mixing(0.0, 0.0, 2) is None


@pytest.fixture
def logits_and_labels():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g) * 2, torch.tensor([0, 1, 2, 2, 1, 0])


def test_hard_loss_takes_soft_targets(logits_and_labels):
    student, _, labels = logits_and_labels
    three = SingleLabel(["a", "b", "c"])
    onehot = F.one_hot(labels, 3).float()
    loss = HardLabelLoss(three, label_smoothing=0.1)
    assert torch.allclose(loss(student, None, onehot), loss(student, None, labels))  # one-hot = the index
    soft = 0.7 * onehot + 0.3 * onehot.roll(1, 0)
    weight = torch.tensor([1.0, 2.0, 0.5])
    expected = -(weight * soft * F.log_softmax(student, 1)).sum(1).mean()  # per image, averaged over images
    assert torch.allclose(HardLabelLoss(three, weight)(student, None, soft), expected)


def test_distillation_takes_soft_targets_and_keeps_its_soft_term(logits_and_labels):
    student, teacher, labels = logits_and_labels
    three = SingleLabel(["a", "b", "c"])
    soft = 0.6 * F.one_hot(labels, 3).float() + 0.4 * F.one_hot(labels.roll(1), 3).float()
    ce = nn.CrossEntropyLoss()
    soft_term = kd_loss(student, teacher, labels, 2.0, 1.0, ce, three)
    assert torch.equal(kd_loss(student, teacher, soft, 2.0, 1.0, ce, three), soft_term)
    mixed = kd_loss(student, teacher, soft, 2.0, 0.5, ce, three)
    assert torch.allclose(mixed, 0.5 * soft_term + 0.5 * ce(student, soft))


def test_bf16_distillation_step_with_mixed_batch():
    teacher = nn.Linear(4, 2)
    criterion = DistillationLoss(teacher, TWO, temperature=2.0, alpha=0.5, weight=torch.tensor([1.0, 2.0]))
    student = nn.Linear(4, 2)
    images, targets = v2.MixUp(alpha=0.4, num_classes=2)(torch.randn(6, 4, 1, 1), torch.tensor([0, 1, 1, 0, 1, 0]))
    images = images.flatten(1)
    with Compute(torch.device("cpu"), "bf16").autocast():
        loss = criterion(student(images), images, targets)
    loss.backward()
    assert torch.isfinite(loss) and student.weight.grad is not None


# ------------------------------------------------------------------ per-image policy
@pytest.mark.parametrize("name, kind", [("trivialaugment", v2.TrivialAugmentWide), ("randaugment", v2.RandAugment)])
def test_policy_runs_on_uint8_before_normalisation(name, kind):
    dataset = ImageDataset(*toy_split(8), META, augment.image_policy(name))
    first, *rest = dataset.transform.transforms
    assert isinstance(first, kind) and [type(t) for t in rest] == [v2.ToDtype, v2.Normalize]
    torch.manual_seed(0)
    augmented = torch.stack([dataset[i][0] for i in range(8)])
    plain = torch.stack([ImageDataset(*toy_split(8), META)[i][0] for i in range(8)])
    assert augmented.dtype == torch.float32 and augmented.shape == plain.shape
    assert not torch.equal(augmented, plain)
    assert augment.image_policy("none") is None


# ------------------------------------------------------------------ schedules
def lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    out = [scheduler.get_last_lr()[0]]
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
        out.append(scheduler.get_last_lr()[0])
    return out


def optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=lr)


def test_cosine_warms_up_linearly_then_decays_to_zero():
    per_epoch, epochs = 10, 5
    lr = lrs(schedules.make_scheduler(optimizer(), "cosine", 0.1, epochs, per_epoch, warmup_epochs=1), 50)
    assert lr[0] == pytest.approx(0.1 * schedules.WARMUP_START)
    assert lr[5] == pytest.approx(0.1 * (schedules.WARMUP_START + 0.5 * (1 - schedules.WARMUP_START)))
    assert lr[10] == pytest.approx(0.1)  # end of warm-up: the peak
    assert lr[30] == pytest.approx(0.05)  # half-way through the cosine
    assert lr[50] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(lr[10:], lr[11:]))


def test_cosine_warm_up_takes_at_most_half_of_a_short_run():
    lr = lrs(schedules.make_scheduler(optimizer(), "cosine", 0.1, 1, 10, warmup_epochs=3), 10)
    assert lr[5] == pytest.approx(0.1) and lr[10] == pytest.approx(0.0, abs=1e-12)
    no_warmup = lrs(schedules.make_scheduler(optimizer(), "cosine", 0.1, 1, 10), 10)
    assert no_warmup[0] == pytest.approx(0.1) and no_warmup[10] == pytest.approx(0.0, abs=1e-12)


def test_onecycle_is_todays_schedule():
    todays = torch.optim.lr_scheduler.OneCycleLR(optimizer(), max_lr=0.1, total_steps=30, pct_start=0.15)
    assert lrs(schedules.make_scheduler(optimizer(), "onecycle", 0.1, 3, 10), 29) == lrs(todays, 29)


# ------------------------------------------------------------------ params
@pytest.mark.parametrize("key, value, message", [
    ("ema_decay", 1.0, r"ema_decay.*\[0.0, 0.9999\]"),
    ("mixup_alpha", -0.1, "mixup_alpha"),
    ("cutmix_alpha", "big", "cutmix_alpha.*a number"),
    ("policy", "autoaugment", "policy.*trivialaugment, randaugment"),
    ("schedule", "step", "schedule.*onecycle, cosine"),
    ("warmup_epochs", 1, "warmup_epochs.*schedule: cosine"),  # with the default onecycle
])
def test_lever_params_are_validated(params_dict, write_params, key, value, message):
    params_dict["train"][key] = value
    with pytest.raises(UserError, match=message):
        load_params(write_params(params_dict))


def test_params_yaml_leaves_every_lever_off():
    train = load_params(PARAMS_YAML).train
    assert (train.ema_decay, train.mixup_alpha, train.cutmix_alpha, train.policy, train.schedule,
            train.warmup_epochs) == (0, 0, 0, "none", "onecycle", 0)


def test_multi_label_data_refuse_batch_mixing():
    with pytest.raises(UserError, match="multi-label.*set both to 0"):
        MultiLabel(["a", "b"]).check_batch_mixing()
    TWO.check_batch_mixing()  # one class per image: mixing is defined


# ------------------------------------------------------------------ the default path
def refuse(*args, **kwargs):
    raise AssertionError("a lever was built with every lever off")


def test_default_params_build_no_lever_and_train_reproducibly(monkeypatch, tmp_path):
    for module, name in [(schedules, "AveragedModel"), (schedules, "SequentialLR"),
                         (schedules, "CosineAnnealingLR"), (schedules, "LinearLR"), (v2, "MixUp"), (v2, "CutMix")]:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(augment, "POLICIES", {})
    params = load_params(PARAMS_YAML)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, batch_size=4, nproc=1, workers=0))
    ctx = Context(params, META, torch.device("cpu"), {"train": toy_split(16), "val": toy_split(8, seed=1)}, TWO)
    states = []
    for run in range(2):
        seed_everything(0)
        model, _ = train(tiny_net(), HardLabelLoss(TWO), ctx, 2, 0.01, tmp_path / f"live{run}", "fp32")
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
