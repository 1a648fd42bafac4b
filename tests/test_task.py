"""lib.task: the task a processed data set was prepared for, and what the multi-label task answers (losses,
metrics, agreement, baseline, warnings, prediction output, Grad-CAM sampling); model files a runtime rejects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import class_image, make_arrays, random_bytes, save_png, truncated_onnx
from lib.checks import collapse_warnings
from lib.config import DatasetConfig
from lib.errors import UserError
from lib.explain import stratified_sample
from lib.export import quantize_onnx_int8, to_tflite
from lib.losses import DistillationLoss, HardLabelLoss, kd_loss
from lib.predict import as_json, as_table, main, top_k
from lib.processed import load_meta, write_processed
from lib.runtimes import predict
from lib.sources import load_source
from lib.task import THRESHOLD, MultiLabel, SingleLabel, for_labels, for_meta, named

LABELS = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=np.uint8)
CLASSES = ["a", "b", "c"]
MULTI = MultiLabel(CLASSES)


# ---------------------------------------------------------------- which task: meta.json, label arrays

def test_meta_without_task_is_single_label():
    task = for_meta({"classes": ["normal", "pneumonia"], "channels": 1})
    assert type(task) is SingleLabel and task.classes == ["normal", "pneumonia"]


def test_meta_names_the_multi_label_task():
    task = for_meta({"classes": CLASSES, "task": "multi-label"})
    assert type(task) is MultiLabel and task.classes == CLASSES
    assert type(for_meta({"classes": CLASSES, "task": "multi-class"})) is SingleLabel
    assert type(named("multi-label", CLASSES)) is MultiLabel


def test_single_label_records_nothing_in_meta_and_multi_label_its_name():
    assert SingleLabel(CLASSES).meta_entry() == {}  # single-label meta.json keeps the bytes it had before tasks
    assert MULTI.meta_entry() == {"task": "multi-label"}
    for task in (SingleLabel(CLASSES), MULTI):  # what a task records, for_meta reads back as that task
        assert type(for_meta({"classes": CLASSES, **task.meta_entry()})) is type(task)


@pytest.mark.parametrize("multi_label, task_type", [(False, SingleLabel), (True, MultiLabel)])
def test_processed_meta_reads_back_as_the_task_of_its_labels(tmp_path, multi_label, task_type):
    make_arrays(tmp_path / "a", {"train": 20, "val": 10, "test": 10}, 3, multi_label=multi_label)
    cfg = DatasetConfig(source="arrays", root=str(tmp_path / "a"), image_size=28, test_fraction=0.25)
    write_processed(load_source(cfg, 0), cfg, tmp_path / "p")
    meta = load_meta(tmp_path / "p")
    assert ("task" in meta) == multi_label
    assert type(for_meta(meta)) is task_type


def test_label_arrays_say_which_task():
    indices, one_hot = np.array([0, 2, 1]), np.eye(3, dtype=np.uint8)[[0, 2, 1]]
    assert for_labels([indices, one_hot]) is SingleLabel
    assert for_labels([indices, LABELS]) is MultiLabel
    assert for_labels([np.zeros((2, 3), dtype=np.uint8)]) is MultiLabel  # a row with no label is not one-hot


# ---------------------------------------------------------------- losses

def test_multilabel_class_weights_are_negatives_over_positives():
    labels = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=np.uint8)
    torch.testing.assert_close(MultiLabel(["x", "y"]).class_weights(labels, "balanced"), torch.tensor([1 / 3, 3.0]))
    assert MultiLabel(["x", "y"]).class_weights(labels, "none") is None


def test_multilabel_hard_loss_is_bce_with_pos_weight_and_smoothing():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(4, 3, generator=g), torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]])
    weight = torch.tensor([1.0, 2.0, 0.5])
    got = HardLabelLoss(MULTI, weight, 0.2)(logits, None, labels.to(torch.uint8))
    expected = F.binary_cross_entropy_with_logits(logits, labels * 0.8 + 0.1, pos_weight=weight)
    torch.testing.assert_close(got, expected)


def test_multilabel_soft_term_is_bce_of_sigmoids_at_temperature_one_whatever_the_param():
    """A per-label sigmoid has no wrong classes for a temperature to reveal (`distillation_temperature`)."""
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    labels = torch.zeros(5, 4, dtype=torch.uint8)
    task = MultiLabel(["w", "x", "y", "z"])
    loss = kd_loss(student, teacher, labels, 2.0, 1.0, task.hard_loss(None, 0.0), task)
    p, q = torch.sigmoid(teacher), torch.sigmoid(student)
    expected = -(p * q.log() + (1 - p) * (1 - q).log()).mean()
    torch.testing.assert_close(loss, expected)


def test_multilabel_distillation_gradient_vanishes_when_student_matches_teacher():
    teacher = torch.nn.Linear(3, 4)
    images = torch.randn(6, 3)
    logits = teacher(images).detach().requires_grad_(True)
    criterion = DistillationLoss(teacher, MultiLabel(["w", "x", "y", "z"]), temperature=3.0, alpha=1.0)
    criterion(logits, images, torch.zeros(6, 4, dtype=torch.uint8)).backward()
    assert logits.grad.abs().max() < 1e-6


def test_multilabel_refuses_an_ensemble_teacher():
    SingleLabel(CLASSES).check_ensemble_teacher()
    with pytest.raises(UserError, match="multi-label"):
        MULTI.check_ensemble_teacher()


# ---------------------------------------------------------------- metrics

def test_multilabel_metrics_of_a_perfect_model():
    probs = np.where(LABELS == 1, 0.9, 0.2)
    m = MULTI.metrics(LABELS, probs)
    assert m["accuracy"] == m["exact_match"] == m["f1_macro"] == m["balanced_accuracy"] == m["auc"] == 1.0
    assert set(m["per_class"]["a"]) == {"auc", "f1", "sensitivity", "specificity"}
    assert m["predicted_positive"] == {"a": 3, "b": 3, "c": 3} and m["images"] == 6
    assert 0.0 <= m["ece"] <= 1.0
    assert "tuned" not in m


def test_multilabel_accuracy_is_per_label_and_exact_match_per_image():
    probs = np.where(LABELS == 1, 0.9, 0.2)
    probs[0, 0] = 0.1  # one wrong decision out of 18, on one image of 6
    m = MULTI.metrics(LABELS, probs)
    assert m["accuracy"] == pytest.approx(17 / 18) == MULTI.accuracy(LABELS, probs)
    assert m["exact_match"] == pytest.approx(5 / 6)


def test_auc_is_the_mean_over_labels_with_both_answers():
    labels = LABELS.copy()
    labels[:, 2] = 1  # label c present everywhere: no AUC
    probs = np.where(labels == 1, 0.7, 0.3)
    probs[0, 1] = 0.8  # a negative of b above its positives
    assert MULTI.auc(labels, probs) == pytest.approx((1.0 + 2 / 3) / 2)
    assert MULTI.metrics(labels, probs)["per_class"]["c"]["auc"] is None


def test_f1_thresholds_chosen_on_val_are_applied_as_tuned_figures():
    probs = np.where(LABELS == 1, 0.3, 0.1)  # right ranking, every probability below 0.5
    thresholds = MULTI.fit_thresholds(LABELS, probs)
    np.testing.assert_allclose(thresholds, [0.3, 0.3, 0.3])
    m = MULTI.metrics(LABELS, probs, thresholds)
    assert m["f1_macro"] == 0.0 and m["tuned"]["f1_macro"] == 1.0 and m["tuned"]["exact_match"] == 1.0
    assert m["tuned"]["thresholds"] == {"a": 0.3, "b": 0.3, "c": 0.3}


def test_multilabel_agreement_counts_label_decisions():
    reference = np.where(LABELS == 1, 0.9, 0.2)
    probs = reference.copy()
    probs[0, 0] = 0.4
    result = MULTI.agreement(reference, probs)
    assert result["label_agreement"] == pytest.approx(17 / 18) and "top1_agreement" not in result
    assert result["max_abs_prob_diff"] == pytest.approx(0.5)


def test_majority_baseline_of_multilabel_is_a_balanced_accuracy_of_a_half():
    assert MULTI.majority_baseline(LABELS, LABELS)["test"] == {"balanced_accuracy": 0.5}
    assert SingleLabel(["x", "y"]).majority_baseline(np.array([0, 1, 1]), np.array([1, 0])) == \
        {"class": "y", "test": {"accuracy": 0.5}}


def test_constant_label_is_warned():
    probs = np.where(LABELS == 1, 0.9, 0.2)
    probs[:, 1] = 0.1
    warnings = collapse_warnings(MULTI, "m", {"test": MULTI.metrics(LABELS, probs)})
    assert len(warnings) == 1 and "'b'" in warnings[0] and "'a'" not in warnings[0]
    assert collapse_warnings(MULTI, "m", {"test": MULTI.metrics(LABELS, np.where(LABELS == 1, 0.9, 0.2))}) == []


# ---------------------------------------------------------------- prediction

def test_predict_applies_a_sigmoid_per_label_for_multilabel_meta(tiny_meta):
    logits = np.array([[0.0, 2.0, -1.0]], dtype=np.float32)
    images = np.zeros((1, 8, 8, 1), dtype=np.uint8)
    multi = predict(lambda x: logits, images, {**tiny_meta, "task": "multi-label"})
    np.testing.assert_allclose(multi, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    single = predict(lambda x: logits, images, tiny_meta)
    assert single.sum() == pytest.approx(1.0)


def test_predict_cli_lists_the_labels_reaching_the_threshold():
    best = top_k(np.array([[0.7, 0.2, 0.55]]), CLASSES, 3)
    out = json.loads(as_json(["x.png"], best, MULTI, threshold=0.5))
    assert out[0]["positive"] == ["a", "c"] and [t["class"] for t in out[0]["top"]] == ["a", "c", "b"]
    assert out[0]["threshold"] == 0.5 and THRESHOLD == 0.5
    assert json.loads(as_json(["x.png"], best, MULTI, threshold=0.6))[0]["positive"] == ["a"]
    table = as_table(["x.png"], best, MULTI, threshold=0.5).splitlines()
    assert table[0].split() == ["file", "class", "probability", "positive"]
    assert [row.split()[-1] for row in table[1:]] == ["yes", "yes", "no"]


# ---------------------------------------------------------------- Grad-CAM sampling

def test_stratified_sample_of_a_label_matrix_takes_turns_over_first_labels():
    chosen = stratified_sample(MULTI, LABELS, 4, seed=0)
    first = [int(np.flatnonzero(row)[0]) for row in LABELS[chosen]]
    assert sorted(set(first)) == [0, 1, 2] and first == sorted(first)
    assert MULTI.describe(LABELS[1]) == "b, c" and MULTI.describe(np.zeros(3)) == "none"
    assert SingleLabel(CLASSES).describe(np.int64(2)) == "c"


# ---------------------------------------------------------------- model files a runtime rejects

CORRUPT = [("m.onnx", truncated_onnx()), ("m.onnx", random_bytes()), ("m.onnx", b""),
           ("m.tflite", random_bytes()), ("m.tflite", b"\x1c\0\0\0TFL3" + random_bytes()), ("m.tflite", b"")]


@pytest.fixture
def scan_and_meta(tmp_path):
    """One 28 px gray image and the meta.json of a two-class data set it fits."""
    image = save_png(tmp_path / "scan.png", class_image(np.random.default_rng(0), 1, 28, rgb=False))
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"classes": ["normal", "pneumonia"], "image_size": 28, "channels": 1,
                                "mean": [0.5], "std": [0.25]}))
    return image, meta


@pytest.mark.parametrize("name, content", CORRUPT, ids=["truncated_onnx", "random_onnx", "empty_onnx",
                                                        "random_tflite", "tflite_header_garbage", "empty_tflite"])
def test_predict_of_a_corrupt_model_file_is_a_one_line_user_error(tmp_path, scan_and_meta, name, content):
    model = tmp_path / name
    model.write_bytes(content)
    image, meta = scan_and_meta
    with pytest.raises(UserError) as err:
        main([str(model), str(image), "--meta", str(meta)])
    message = str(err.value)
    assert str(model) in message and "not a valid" in message and "\n" not in message


@pytest.mark.parametrize("convert", [
    lambda onnx_path, out: to_tflite(onnx_path, out),
    lambda onnx_path, out: quantize_onnx_int8(onnx_path, np.zeros((2, 4, 4, 1), np.float32), [0.5], [0.25], out,
                                              per_channel=False),
], ids=["to_tflite", "quantize_onnx_int8"])
def test_converting_a_garbage_onnx_file_is_a_one_line_user_error(tmp_path, convert):
    onnx_path = tmp_path / "student.onnx"
    onnx_path.write_bytes(random_bytes())
    out = tmp_path / "out.model"
    with pytest.raises(UserError) as err:
        convert(onnx_path, out)
    message = str(err.value)
    assert str(onnx_path) in message and "not a valid ONNX model" in message and "\n" not in message
    assert not out.exists()
