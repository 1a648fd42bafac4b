"""The distillation loss and the frozen teacher (lib.losses), devices and seeding (lib.compute), single-label
class weights, the training loader (lib.loader) and the training loop (lib.training)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib.augment import RandomAffineBatch
from lib.compute import Compute, resolve_device, seed_everything
from lib.context import run_info
from lib.errors import UserError
from lib.loader import make_loader
from lib.losses import DistillationLoss, HardLabelLoss, kd_loss
from lib.models import build
from lib.task import SingleLabel

from conftest import synthetic_split
from lib.training import Schedule, fit, recalibrate_batch_norm, train_one_epoch

CPU = Compute(torch.device("cpu"))
THREE = SingleLabel(["a", "b", "c"])  # the logits fixture's classes
TWO = SingleLabel(["dark", "bright"])  # the toy images' classes


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
    loss = kd_loss(student, teacher, labels, temperature=4.0, alpha=0.0,
                             hard_loss=nn.CrossEntropyLoss(), task=THREE)
    assert torch.allclose(loss, F.cross_entropy(student, labels), atol=1e-6)


def test_soft_term_is_zero_when_logits_agree(logits):
    student, _, labels = logits
    loss = kd_loss(student, student.clone(), labels, temperature=3.0, alpha=1.0,
                             hard_loss=nn.CrossEntropyLoss(), task=THREE)
    assert abs(loss.item()) < 1e-6


def test_soft_term_is_positive_when_logits_differ(logits):
    student, teacher, labels = logits
    loss = kd_loss(student, teacher, labels, temperature=2.0, alpha=1.0,
                             hard_loss=nn.CrossEntropyLoss(), task=THREE)
    assert loss.item() > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_soft_term_is_temperature_squared_times_kl(logits, temperature):
    student, teacher, labels = logits
    loss = kd_loss(student, teacher, labels, temperature=temperature, alpha=1.0,
                             hard_loss=nn.CrossEntropyLoss(), task=THREE)
    expected = temperature ** 2 * manual_kl(student, teacher, temperature)
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-7)


def test_temperature_scaling_between_t1_and_t2(logits):
    student, teacher, labels = logits
    ce = nn.CrossEntropyLoss()
    l1 = kd_loss(student, teacher, labels, 1.0, 1.0, ce, THREE)
    l2 = kd_loss(student, teacher, labels, 2.0, 1.0, ce, THREE)
    assert torch.allclose(l2 / l1, 4.0 * manual_kl(student, teacher, 2.0) / manual_kl(student, teacher, 1.0),
                          rtol=1e-5)


def test_mixture_weights_soft_and_hard_terms(logits):
    student, teacher, labels = logits
    ce = nn.CrossEntropyLoss()
    alpha, temperature = 0.3, 2.0
    loss = kd_loss(student, teacher, labels, temperature, alpha, ce, THREE)
    expected = alpha * temperature ** 2 * manual_kl(student, teacher, temperature) \
        + (1 - alpha) * F.cross_entropy(student, labels)
    assert torch.allclose(loss, expected, rtol=1e-5)


def _teacher() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))


def test_teacher_stays_in_eval_mode_after_train():
    teacher = _teacher().train()
    criterion = DistillationLoss(teacher, THREE, temperature=2.0, alpha=0.5)
    criterion.train()
    assert criterion.training
    assert not any(m.training for m in teacher.modules())
    criterion.train(True).eval().train()
    assert not any(m.training for m in teacher.modules())


def test_no_gradients_flow_to_teacher():
    teacher = _teacher()
    running_mean = teacher[2].running_mean.clone()
    criterion = DistillationLoss(teacher, THREE, temperature=2.0, alpha=0.5).train()
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
    loss = HardLabelLoss(THREE, weight)(student, None, labels)
    assert torch.allclose(loss, F.cross_entropy(student, labels, weight=weight))


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_resolve_device_cuda_without_gpu_is_a_user_error():
    with pytest.raises(UserError, match="cuda"):
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
    weights = THREE.class_weights(labels, "balanced")
    counts = np.array([6, 2, 4])
    expected = len(labels) / (3 * counts)
    assert weights.dtype == torch.float32
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)


def test_class_weights_none_mode_returns_none():
    assert SingleLabel(["x", "y"]).class_weights(np.array([0, 1, 1]), "none") is None


def _toy_split(rng, n, channels=1):
    labels = np.arange(n) % 2
    shape = (n, 8, 8, channels)
    images = np.where(labels[:, None, None, None] == 0,
                      rng.integers(0, 90, shape), rng.integers(160, 256, shape)).astype(np.uint8)
    return images, labels.astype(np.int64)


TOY_META = {"classes": ["dark", "bright"], "mean": [0.5], "std": [0.35], "channels": 1, "image_size": 8}


def _fit_toy(compute: Compute, criterion: nn.Module | None = None, model: nn.Module | None = None,
             channels: int = 1) -> tuple[nn.Module, dict, dict]:
    seed_everything(0)
    rng = np.random.default_rng(0)
    train, val = _toy_split(rng, 16, channels), _toy_split(rng, 8, channels)
    meta = {**TOY_META, "mean": [0.5] * channels, "std": [0.35] * channels, "channels": channels}
    loader = make_loader(*train, meta, batch_size=8, shuffle=True, augment=True, seed=0)
    model = model or build("mobilenetv2", 2, channels, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, info = fit(model, criterion or HardLabelLoss(TWO), loader, val, meta,
                      Schedule(epochs=1, lr=1e-3, weight_decay=0.0, monitor="auc"), compute)
    return model, info, before


def test_fit_one_epoch_returns_eval_model_and_best_epoch():
    model, info, before = _fit_toy(CPU)
    assert not any(m.training for m in model.modules())
    assert info["best_epoch"] == 1
    assert 0.0 <= info["best_val_auc"] <= 1.0
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained


def test_fit_reports_throughput_epoch_time_and_precision():
    _, info, _ = _fit_toy(CPU)
    assert info["precision"] == "fp32"
    assert info["images_per_s"] > 0 and info["epoch_seconds"] > 0


class FormatSpy(HardLabelLoss):
    """Records the memory format of the batches and of the stem's weights during training."""

    def __init__(self, stem: nn.Conv2d):
        super().__init__(TWO)
        self.stem = [stem]  # a list: not a submodule, so `fit` does not move or convert it

    def forward(self, logits, images, labels):
        self.seen = (images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous(),
                     self.stem[0].weight.is_contiguous(memory_format=torch.channels_last))
        return super().forward(logits, images, labels)


def test_fit_trains_channels_last_and_returns_contiguous_weights():
    model = build("mobilenetv2", 2, 3, 8)  # 3 channels: NCHW and NHWC strides differ
    spy = FormatSpy(model.features[0][0])
    model, _, _ = _fit_toy(CPU, spy, model, channels=3)
    assert spy.seen == (True, True)
    assert all(p.is_contiguous() for p in model.parameters())  # ready for pruning and export


def test_bf16_training_step_runs_with_finite_loss_and_fp32_weights():
    seed_everything(0)
    images, labels = _toy_split(np.random.default_rng(1), 16)
    loader = make_loader(images, labels, TOY_META, batch_size=8, shuffle=True)
    model = build("mobilenetv2", 2, 1, 8).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    compute = Compute(torch.device("cpu"), "bf16")
    before = model.classifier[1].weight.clone()
    loss = train_one_epoch(model, HardLabelLoss(TWO), optimizer, scheduler, loader, compute, compute.grad_scaler())
    assert np.isfinite(loss) and loss > 0
    assert model.classifier[1].weight.dtype == torch.float32
    assert not torch.equal(before, model.classifier[1].weight)


def test_bf16_autocast_computes_in_bfloat16():
    with Compute(torch.device("cpu"), "bf16").autocast():
        assert nn.Linear(4, 2)(torch.randn(3, 4)).dtype == torch.bfloat16
    with CPU.autocast():
        assert nn.Linear(4, 2)(torch.randn(3, 4)).dtype == torch.float32


def test_fp16_on_cpu_is_refused_with_a_clear_message():
    with pytest.raises(UserError, match="fp16.*CUDA"):
        Compute(torch.device("cpu"), "fp16")


class PrecisionSpy(nn.Module):
    """A teacher that records the autocast and inference-mode state it runs under."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        self.seen = (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"),
                     torch.is_inference_mode_enabled())
        return self.linear(x)


@pytest.mark.parametrize("precision, autocast", [("fp32", False), ("bf16", torch.bfloat16)])
def test_teacher_runs_in_inference_mode_at_its_own_precision(precision, autocast):
    teacher = PrecisionSpy()
    criterion = DistillationLoss(teacher, THREE, temperature=2.0, alpha=0.5, teacher_precision=precision)
    student = nn.Linear(4, 3)
    images, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    with Compute(torch.device("cpu"), "bf16").autocast():  # the student's precision does not leak in
        loss = criterion(student(images), images, labels)
    loss.backward()
    assert teacher.seen == (autocast, True)
    assert student.weight.grad is not None


def test_loader_for_cuda_pins_memory_and_uses_the_asked_workers():
    images, labels = _toy_split(np.random.default_rng(0), 8)
    loader = make_loader(images, labels, TOY_META, 4, device=torch.device("cuda"), workers=2)
    assert loader.pin_memory and loader.num_workers == 2 and loader.persistent_workers


def test_loader_on_cpu_loads_in_process_without_pinning():
    images, labels = _toy_split(np.random.default_rng(0), 8)
    loader = make_loader(images, labels, TOY_META, 4, device=torch.device("cpu"))
    assert not loader.pin_memory and loader.num_workers == 0


def test_loader_shards_are_disjoint_and_cover_the_split():
    images, labels = _toy_split(np.random.default_rng(0), 10)
    labels = np.arange(10)  # labels as ids, to see which samples each rank gets
    shards = [torch.cat([b for _, b in make_loader(images, labels, TOY_META, 4, shuffle=True, seed=3,
                                                   rank=r, world_size=2)]).tolist() for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(shards[0] + shards[1]) == list(range(10))


def test_augmented_loader_jitters_each_image_differently():
    images = np.tile(np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1) * 4, (6, 1, 1, 1))
    torch.manual_seed(0)
    batch, _ = next(iter(make_loader(images, np.zeros(6, dtype=np.int64), TOY_META, 6, augment=True)))
    assert batch.shape == (6, 1, 8, 8)
    assert all(not torch.allclose(batch[0], batch[i]) for i in range(1, 6))


def test_random_affine_without_range_is_identity_and_border_is_fill():
    images = torch.randn(3, 2, 8, 8)
    assert torch.allclose(RandomAffineBatch(0, 0.0, (1.0, 1.0), [0.0, 0.0])(images), images, atol=1e-5)
    shrunk = RandomAffineBatch(0, 0.0, (0.5, 0.5), [-1.5, 2.0])(images)
    assert torch.allclose(shrunk[:, 0, 0, 0], torch.tensor(-1.5)) and torch.allclose(shrunk[:, 1, 0, 0],
                                                                                     torch.tensor(2.0))


def test_run_info_records_peak_memory():
    ctx = types.SimpleNamespace(params=types.SimpleNamespace(seed=7), device=torch.device("cpu"))
    info = run_info(ctx)
    assert info["seed"] == 7 and info["device"] == "cpu"
    assert 10 < info["peak_rss_mb"] < 1_000_000


def test_recalibrated_batch_norm_holds_the_exact_statistics_of_the_loader():
    seed_everything(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    images, labels = _toy_split(np.random.default_rng(2), 40)
    loader = make_loader(images, labels, TOY_META, batch_size=8)
    recalibrate_batch_norm(model, loader, torch.device("cpu"))
    with torch.no_grad():
        features = torch.cat([model[0](x) for x, _ in loader])
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert model[1].momentum == 0.1 and model.training  # left as it was found


def _first_epoch_accuracy(bn_loader: bool) -> float:
    """Val accuracy after one epoch on a small learnable four-class set, at a learning rate that moves the
    weights fast: where running batch-norm averages lag behind the weights."""
    seed_everything(0)
    rng = np.random.default_rng(0)
    train, val = ((images[..., None], labels) for images, labels in
                  (synthetic_split(n, 4, multi_label=False, size=16, rgb=False, rng=rng) for n in (256, 96)))
    meta = {"classes": list("abcd"), "mean": [0.45], "std": [0.3], "channels": 1, "image_size": 16}
    loader = make_loader(*train, meta, batch_size=32, shuffle=True, augment=True, seed=0)
    model, info = fit(build("mobilenetv2", 4, 1, 16), HardLabelLoss(SingleLabel(meta["classes"])), loader, val,
                      meta, Schedule(epochs=1, lr=0.004, weight_decay=0.0, monitor="accuracy"), CPU,
                      bn_loader=make_loader(*train, meta, batch_size=128) if bn_loader else None)
    return info["best_val_accuracy"]


def test_a_small_set_leaves_chance_in_its_first_epoch():
    recalibrated, running = _first_epoch_accuracy(bn_loader=True), _first_epoch_accuracy(bn_loader=False)
    assert recalibrated >= 0.5  # chance: 0.25
    assert recalibrated >= running + 0.2  # the running averages alone left this model at chance
