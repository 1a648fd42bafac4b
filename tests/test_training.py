"""lib.training: the distillation loss, the frozen teacher, devices, seeding, class weights and `fit`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib.data import make_loader
from lib.models import build
from lib.training import (DistillationLoss, HardLabelLoss, Schedule, class_weights, distillation_loss,
                          fit, resolve_device, seed_everything)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 3, generator=g)
    teacher = torch.randn(6, 3, generator=g) * 2
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    return student, teacher, labels


def manual_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) averaged over the batch, written out by hand."""
    p_t = torch.softmax(teacher / temperature, dim=1)
    log_p_s = torch.log_softmax(student / temperature, dim=1)
    return (p_t * (torch.log(p_t) - log_p_s)).sum(dim=1).mean()


def test_alpha_zero_is_plain_cross_entropy(logits):
    student, teacher, labels = logits
    loss = distillation_loss(student, teacher, labels, temperature=4.0, alpha=0.0,
                             hard_loss=nn.CrossEntropyLoss())
    assert torch.allclose(loss, F.cross_entropy(student, labels), atol=1e-6)


def test_soft_term_is_zero_when_logits_agree(logits):
    student, _, labels = logits
    loss = distillation_loss(student, student.clone(), labels, temperature=3.0, alpha=1.0,
                             hard_loss=nn.CrossEntropyLoss())
    assert abs(loss.item()) < 1e-6


def test_soft_term_is_positive_when_logits_differ(logits):
    student, teacher, labels = logits
    loss = distillation_loss(student, teacher, labels, temperature=2.0, alpha=1.0,
                             hard_loss=nn.CrossEntropyLoss())
    assert loss.item() > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_soft_term_is_temperature_squared_times_kl(logits, temperature):
    student, teacher, labels = logits
    loss = distillation_loss(student, teacher, labels, temperature=temperature, alpha=1.0,
                             hard_loss=nn.CrossEntropyLoss())
    expected = temperature ** 2 * manual_kl(student, teacher, temperature)
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-7)


def test_temperature_scaling_between_t1_and_t2(logits):
    student, teacher, labels = logits
    ce = nn.CrossEntropyLoss()
    l1 = distillation_loss(student, teacher, labels, 1.0, 1.0, ce)
    l2 = distillation_loss(student, teacher, labels, 2.0, 1.0, ce)
    assert torch.allclose(l2 / l1, 4.0 * manual_kl(student, teacher, 2.0) / manual_kl(student, teacher, 1.0),
                          rtol=1e-5)


def test_mixture_weights_soft_and_hard_terms(logits):
    student, teacher, labels = logits
    ce = nn.CrossEntropyLoss()
    alpha, temperature = 0.3, 2.0
    loss = distillation_loss(student, teacher, labels, temperature, alpha, ce)
    expected = alpha * temperature ** 2 * manual_kl(student, teacher, temperature) \
        + (1 - alpha) * F.cross_entropy(student, labels)
    assert torch.allclose(loss, expected, rtol=1e-5)


def _teacher() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))


def test_teacher_stays_in_eval_mode_after_train():
    teacher = _teacher().train()
    criterion = DistillationLoss(teacher, temperature=2.0, alpha=0.5)
    criterion.train()
    assert criterion.training
    assert not any(m.training for m in teacher.modules())
    criterion.train(True).eval().train()
    assert not any(m.training for m in teacher.modules())


def test_no_gradients_flow_to_teacher():
    teacher = _teacher()
    running_mean = teacher[2].running_mean.clone()
    criterion = DistillationLoss(teacher, temperature=2.0, alpha=0.5).train()
    student = nn.Linear(4, 3)
    images = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 0, 1])
    loss = criterion(student(images), images, labels)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert torch.equal(teacher[2].running_mean, running_mean)  # eval mode: BN statistics untouched
    # deterministic teacher (dropout off): the same batch gives the same loss
    assert torch.equal(criterion(student(images), images, labels), criterion(student(images), images, labels))


def test_hard_label_loss_is_weighted_cross_entropy(logits):
    student, _, labels = logits
    weight = torch.tensor([1.0, 2.0, 0.5])
    loss = HardLabelLoss(weight)(student, None, labels)
    assert torch.allclose(loss, F.cross_entropy(student, labels, weight=weight))


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_resolve_device_cuda_without_gpu_raises():
    with pytest.raises(RuntimeError, match="cuda"):
        resolve_device("cuda")


def test_seed_everything_makes_randn_reproducible():
    seed_everything(123)
    a, na = torch.randn(5), np.random.rand(3)
    seed_everything(123)
    b, nb = torch.randn(5), np.random.rand(3)
    assert torch.equal(a, b) and np.array_equal(na, nb)
    seed_everything(124)
    assert not torch.equal(a, torch.randn(5))


def test_balanced_class_weights_match_formula():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    weights = class_weights(labels, 3, "balanced")
    counts = np.array([6, 2, 4])
    expected = len(labels) / (3 * counts)
    assert weights.dtype == torch.float32
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)


def test_class_weights_none_mode_returns_none():
    assert class_weights(np.array([0, 1, 1]), 2, "none") is None


def _toy_split(rng, n):
    labels = np.arange(n) % 2
    images = np.where(labels[:, None, None, None] == 0,
                      rng.integers(0, 90, (n, 8, 8, 1)), rng.integers(160, 256, (n, 8, 8, 1))).astype(np.uint8)
    return images, labels.astype(np.int64)


def test_fit_one_epoch_returns_eval_model_and_best_epoch():
    seed_everything(0)
    rng = np.random.default_rng(0)
    train, val = _toy_split(rng, 16), _toy_split(rng, 8)
    meta = {"classes": ["dark", "bright"], "mean": [0.5], "std": [0.35], "channels": 1, "image_size": 8}
    loader = make_loader(*train, meta, batch_size=8, shuffle=True, seed=0)
    model = build("mobilenetv2", 2, 1, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, info = fit(model, HardLabelLoss(), loader, val, meta,
                      Schedule(epochs=1, lr=1e-3, weight_decay=0.0, monitor="auc"), torch.device("cpu"))
    assert not any(m.training for m in model.modules())
    assert info["best_epoch"] == 1
    assert 0.0 <= info["best_val_auc"] <= 1.0
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
