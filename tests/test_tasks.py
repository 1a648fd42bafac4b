"""Task types: MedMNIST multi-label (ChestMNIST), ordinal (RetinaMNIST) and multi-class sets read from local
files, multi-label arrays, and the multi-label losses, metrics, prediction, checks and Grad-CAM sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_arrays, make_medmnist_npz
from lib.checks import single_class_warnings
from lib.config import DatasetConfig
from lib.data import MULTI_LABEL, SPLITS, is_multi_label, load_source, load_split, write_processed
from lib.errors import UserError
from lib.explain import describe, stratified_sample
from lib.metrics import (accuracy_from_probs, agreement, auc_score, classification_metrics, f1_thresholds,
                         majority_baseline)
from lib.predict import as_json, as_table, top_k
from lib.runtimes import predict
from lib.training import DistillationLoss, HardLabelLoss, class_weights, distillation_loss

PER_SPLIT = {"train": 40, "val": 20, "test": 20}


def medmnist_cfg(root, name: str) -> DatasetConfig:
    return DatasetConfig(source="medmnist", root=str(root), image_size=28, test_fraction=0.15, name=name)


def prepare(cfg: DatasetConfig, out) -> tuple[dict, dict]:
    meta = write_processed(load_source(cfg, 0), cfg, out)
    return meta, {split: load_split(out, split) for split in SPLITS}


# ---------------------------------------------------------------- MedMNIST files, no download

def test_chestmnist_is_multi_label(tmp_path):
    make_medmnist_npz(tmp_path / "raw", "chestmnist", PER_SPLIT, 14, multi_label=True)
    meta, splits = prepare(medmnist_cfg(tmp_path / "raw", "chestmnist"), tmp_path / "p")
    assert meta["task"] == MULTI_LABEL and is_multi_label(meta)
    assert len(meta["classes"]) == 14 and meta["classes"][:2] == ["atelectasis", "cardiomegaly"]
    _, y = splits["train"]
    assert y.shape == (40, 14) and y.dtype == np.uint8
    assert meta["counts"]["train"]["atelectasis"] == int(y[:, 0].sum())


def test_retinamnist_ordinal_grades_are_classes(tmp_path):
    make_medmnist_npz(tmp_path / "raw", "retinamnist", PER_SPLIT, 5, rgb=True)
    meta, splits = prepare(medmnist_cfg(tmp_path / "raw", "retinamnist"), tmp_path / "p")
    assert "task" not in meta and not is_multi_label(meta)  # multi-class, recorded as before tasks existed
    assert meta["classes"] == ["0", "1", "2", "3", "4"] and meta["channels"] == 3
    _, y = splits["test"]
    assert y.dtype == np.int64 and y.shape == (20,) and set(y.tolist()) == set(range(5))


def test_bloodmnist_multi_class_rgb(tmp_path):
    make_medmnist_npz(tmp_path / "raw", "bloodmnist", PER_SPLIT, 8, rgb=True)
    meta, splits = prepare(medmnist_cfg(tmp_path / "raw", "bloodmnist"), tmp_path / "p")
    assert len(meta["classes"]) == 8 and meta["channels"] == 3 and "task" not in meta
    x, y = splits["train"]
    assert x.shape == (40, 28, 28, 3) and sum(meta["counts"]["train"].values()) == 40


def test_medmnist_3d_set_is_refused(tmp_path):
    with pytest.raises(UserError, match="3D"):
        load_source(medmnist_cfg(tmp_path, "organmnist3d"), 0)


# ---------------------------------------------------------------- arrays

def arrays_cfg(root, test_fraction=0.25) -> DatasetConfig:
    return DatasetConfig(source="arrays", root=str(root), image_size=28, test_fraction=test_fraction)


def test_arrays_label_matrix_is_multi_label_and_test_is_carved(tmp_path):
    make_arrays(tmp_path / "a", {"train": 40, "val": 12}, 5, multi_label=True)
    meta, splits = prepare(arrays_cfg(tmp_path / "a"), tmp_path / "p")
    assert meta["task"] == MULTI_LABEL and meta["classes"] == [f"label{i}" for i in range(5)]
    assert meta["test_split"] == "carved from train: 25% at random, seed 0"
    assert splits["train"][1].shape == (30, 5) and splits["test"][1].shape == (10, 5)


def test_arrays_label_matrix_must_be_zero_one(tmp_path):
    make_arrays(tmp_path / "a", {"train": 20, "val": 10}, 3, multi_label=True)
    y = np.load(tmp_path / "a/y_val.npy")
    y[0, 0] = 2
    np.save(tmp_path / "a/y_val.npy", y)
    with pytest.raises(UserError, match="only 0 and 1"):
        load_source(arrays_cfg(tmp_path / "a"), 0)


def test_arrays_multi_label_needs_a_matrix_in_every_split(tmp_path):
    make_arrays(tmp_path / "a", {"train": 20, "val": 10}, 3, multi_label=True)
    np.save(tmp_path / "a/y_val.npy", np.zeros(10, dtype=np.int64))
    with pytest.raises(UserError, match="y_val.npy.*0/1 matrix"):
        load_source(arrays_cfg(tmp_path / "a"), 0)


def test_arrays_label_constant_in_train_raises(tmp_path):
    make_arrays(tmp_path / "a", {"train": 20, "val": 10}, 3, multi_label=True)
    y = np.load(tmp_path / "a/y_train.npy")
    y[:, 1] = 0
    np.save(tmp_path / "a/y_train.npy", y)
    with pytest.raises(UserError, match="label1"):
        load_source(arrays_cfg(tmp_path / "a"), 0)


def test_arrays_one_column_is_single_label(tmp_path):
    make_arrays(tmp_path / "a", {"train": 20, "val": 10}, 2)
    np.save(tmp_path / "a/y_train.npy", np.load(tmp_path / "a/y_train.npy")[:, None])
    raw = load_source(arrays_cfg(tmp_path / "a"), 0)
    assert raw.task == "multi-class" and raw.splits["train"].labels.ndim == 1


# ---------------------------------------------------------------- losses

def test_multilabel_class_weights_are_negatives_over_positives():
    labels = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=np.uint8)
    torch.testing.assert_close(class_weights(labels, 2, "balanced"), torch.tensor([1 / 3, 3.0]))


def test_multilabel_hard_loss_is_bce_with_pos_weight_and_smoothing():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(4, 3, generator=g), torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]])
    weight = torch.tensor([1.0, 2.0, 0.5])
    got = HardLabelLoss(weight, 0.2, MULTI_LABEL)(logits, None, labels.to(torch.uint8))
    expected = F.binary_cross_entropy_with_logits(logits, labels * 0.8 + 0.1, pos_weight=weight)
    torch.testing.assert_close(got, expected)


def test_multilabel_soft_term_is_temperature_scaled_bce_of_sigmoids():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    labels = torch.zeros(5, 4, dtype=torch.uint8)
    loss = distillation_loss(student, teacher, labels, 2.0, 1.0, HardLabelLoss(task=MULTI_LABEL).hard, MULTI_LABEL)
    p, q = torch.sigmoid(teacher / 2), torch.sigmoid(student / 2)
    expected = 4.0 * -(p * q.log() + (1 - p) * (1 - q).log()).mean()
    torch.testing.assert_close(loss, expected)


def test_multilabel_distillation_gradient_vanishes_when_student_matches_teacher():
    teacher = torch.nn.Linear(3, 4)
    images = torch.randn(6, 3)
    logits = teacher(images).detach().requires_grad_(True)
    criterion = DistillationLoss(teacher, temperature=3.0, alpha=1.0, task=MULTI_LABEL)
    criterion(logits, images, torch.zeros(6, 4, dtype=torch.uint8)).backward()
    assert logits.grad.abs().max() < 1e-6


# ---------------------------------------------------------------- metrics

LABELS = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=np.uint8)
CLASSES = ["a", "b", "c"]


def test_multilabel_metrics_of_a_perfect_model():
    probs = np.where(LABELS == 1, 0.9, 0.2)
    m = classification_metrics(LABELS, probs, CLASSES)
    assert m["accuracy"] == m["exact_match"] == m["f1_macro"] == m["balanced_accuracy"] == m["auc"] == 1.0
    assert set(m["per_class"]["a"]) == {"auc", "f1", "sensitivity", "specificity"}
    assert m["predicted_positive"] == {"a": 3, "b": 3, "c": 3} and m["images"] == 6
    assert 0.0 <= m["ece"] <= 1.0


def test_multilabel_accuracy_is_per_label_and_exact_match_per_image():
    probs = np.where(LABELS == 1, 0.9, 0.2)
    probs[0, 0] = 0.1  # one wrong decision out of 18, on one image of 6
    m = classification_metrics(LABELS, probs, CLASSES)
    assert m["accuracy"] == pytest.approx(17 / 18) == accuracy_from_probs(LABELS, probs)
    assert m["exact_match"] == pytest.approx(5 / 6)


def test_auc_is_the_mean_over_labels_with_both_answers():
    labels = LABELS.copy()
    labels[:, 2] = 1  # label c present everywhere: no AUC
    probs = np.where(labels == 1, 0.7, 0.3)
    probs[0, 1] = 0.8  # a negative of b above its positives
    assert auc_score(labels, probs) == pytest.approx((1.0 + 2 / 3) / 2)
    assert classification_metrics(labels, probs, CLASSES)["per_class"]["c"]["auc"] is None


def test_f1_thresholds_chosen_on_val_are_applied_as_tuned_figures():
    probs = np.where(LABELS == 1, 0.3, 0.1)  # right ranking, every probability below 0.5
    thresholds = f1_thresholds(LABELS, probs)
    np.testing.assert_allclose(thresholds, [0.3, 0.3, 0.3])
    m = classification_metrics(LABELS, probs, CLASSES, thresholds)
    assert m["f1_macro"] == 0.0 and m["tuned"]["f1_macro"] == 1.0 and m["tuned"]["exact_match"] == 1.0
    assert m["tuned"]["thresholds"] == {"a": 0.3, "b": 0.3, "c": 0.3}


def test_multilabel_agreement_counts_label_decisions():
    reference = np.where(LABELS == 1, 0.9, 0.2)
    probs = reference.copy()
    probs[0, 0] = 0.4
    result = agreement(reference, probs, multi_label=True)
    assert result["label_agreement"] == pytest.approx(17 / 18) and "top1_agreement" not in result
    assert result["max_abs_prob_diff"] == pytest.approx(0.5)


def test_majority_baseline_of_multilabel_is_a_balanced_accuracy_of_a_half():
    assert majority_baseline(LABELS, LABELS, CLASSES)["test"] == {"balanced_accuracy": 0.5}
    assert majority_baseline(np.array([0, 1, 1]), np.array([1, 0]), ["x", "y"]) == \
        {"class": "y", "test": {"accuracy": 0.5}}


def test_constant_label_is_warned():
    probs = np.where(LABELS == 1, 0.9, 0.2)
    probs[:, 1] = 0.1
    warnings = single_class_warnings("m", {"test": classification_metrics(LABELS, probs, CLASSES)})
    assert len(warnings) == 1 and "'b'" in warnings[0] and "'a'" not in warnings[0]


# ---------------------------------------------------------------- prediction

def test_predict_applies_a_sigmoid_per_label_for_multilabel_meta(tiny_meta):
    logits = np.array([[0.0, 2.0, -1.0]], dtype=np.float32)
    images = np.zeros((1, 8, 8, 1), dtype=np.uint8)
    multi = predict(lambda x: logits, images, {**tiny_meta, "task": MULTI_LABEL})
    np.testing.assert_allclose(multi, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    single = predict(lambda x: logits, images, tiny_meta)
    assert single.sum() == pytest.approx(1.0)


def test_predict_cli_lists_the_labels_reaching_the_threshold():
    best = top_k(np.array([[0.7, 0.2, 0.55]]), CLASSES, 3)
    out = json.loads(as_json(["x.png"], best, threshold=0.5))
    assert out[0]["positive"] == ["a", "c"] and [t["class"] for t in out[0]["top"]] == ["a", "c", "b"]
    table = as_table(["x.png"], best, threshold=0.5).splitlines()
    assert table[0].split() == ["file", "class", "probability", "positive"]
    assert [row.split()[-1] for row in table[1:]] == ["yes", "yes", "no"]


# ---------------------------------------------------------------- Grad-CAM sampling

def test_stratified_sample_of_a_label_matrix_takes_turns_over_first_labels():
    chosen = stratified_sample(LABELS, 4, seed=0)
    first = [int(np.flatnonzero(row)[0]) for row in LABELS[chosen]]
    assert sorted(set(first)) == [0, 1, 2] and first == sorted(first)
    assert describe(LABELS[1], CLASSES) == "b, c" and describe(np.zeros(3), CLASSES) == "none"
    assert describe(np.int64(2), CLASSES) == "c"
