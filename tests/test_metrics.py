"""Single-label scoring (`lib.task.SingleLabel`) and the task-agnostic helpers of lib.metrics, on small inputs
whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lib.metrics import bootstrap_ci, expected_calibration_error, f1_thresholds, label_aucs, mean_defined
from lib.task import SingleLabel

BINARY = SingleLabel(["neg", "pos"])
THREE = SingleLabel(["a", "b", "c"])


def one_hot_probs(preds, k, confidence=0.9):
    """Probabilities whose arg-max is `preds`, with `confidence` on the predicted class."""
    probs = np.full((len(preds), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def test_binary_metrics_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1])
    preds = np.array([0, 0, 0, 1, 1, 0])
    m = BINARY.metrics(labels, one_hot_probs(preds, 2))
    # 4 of 6 right; recall neg 3/4, pos 1/2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    # F1 neg: P 3/4 R 3/4 → 0.75; F1 pos: P 1/2 R 1/2 → 0.5
    assert m["f1_macro"] == pytest.approx((0.75 + 0.5) / 2)
    assert m["per_class"] == {
        "neg": {"sensitivity": pytest.approx(0.75), "specificity": pytest.approx(0.5)},
        "pos": {"sensitivity": pytest.approx(0.5), "specificity": pytest.approx(0.75)},
    }
    assert set(m) == {"accuracy", "balanced_accuracy", "auc", "f1_macro", "ece", "per_class", "predicted_counts"}
    assert m["predicted_counts"] == {"neg": 4, "pos": 2}


def test_single_label_metrics_ignore_thresholds_and_fit_none():
    labels = np.array([0, 0, 1, 1])
    probs = one_hot_probs(np.array([0, 1, 1, 1]), 2)
    assert BINARY.fit_thresholds(labels, probs) is None
    assert BINARY.metrics(labels, probs, None) == BINARY.metrics(labels, probs)
    assert "tuned" not in BINARY.metrics(labels, probs)


def test_three_class_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0, 2])
    m = THREE.metrics(labels, one_hot_probs(preds, 3))
    assert m["accuracy"] == pytest.approx(5 / 7)
    # recalls: a 1/2, b 2/2, c 2/3
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    # F1: a P1/2 R1/2 → 1/2; b P2/3 R1 → 4/5; c P1 R2/3 → 4/5
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    # specificity: a: negatives 5, false positives 1 → 4/5; b: negatives 5, FP 1 → 4/5; c: negatives 4, FP 0
    rates = m["per_class"]
    assert rates["a"] == {"sensitivity": pytest.approx(0.5), "specificity": pytest.approx(0.8)}
    assert rates["b"] == {"sensitivity": pytest.approx(1.0), "specificity": pytest.approx(0.8)}
    assert rates["c"] == {"sensitivity": pytest.approx(2 / 3), "specificity": pytest.approx(1.0)}


def test_absent_class_has_undefined_sensitivity():
    labels = np.array([0, 0, 1, 1])
    m = THREE.metrics(labels, one_hot_probs(np.array([0, 1, 1, 1]), 3))
    assert m["per_class"]["c"]["sensitivity"] is None
    assert m["per_class"]["c"]["specificity"] == pytest.approx(1.0)
    assert m["auc"] is None  # a class is missing from the split: one-vs-rest AUC undefined


def test_binary_auc_by_hand():
    labels = np.array([0, 0, 1, 1])
    pos = np.array([0.1, 0.4, 0.35, 0.8])
    # positive/negative pairs ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4) → 3/4
    assert BINARY.auc(labels, np.stack([1 - pos, pos], axis=1)) == pytest.approx(0.75)


def _pairwise_auc(positive_scores, negative_scores):
    wins = [(p > n) + 0.5 * (p == n) for p in positive_scores for n in negative_scores]
    return float(np.mean(wins))


def test_three_class_auc_is_one_vs_rest_macro():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.7, 0.2, 0.1],
                      [0.3, 0.4, 0.3],
                      [0.2, 0.5, 0.3],
                      [0.5, 0.3, 0.2],
                      [0.1, 0.2, 0.7],
                      [0.3, 0.3, 0.4]])
    per_class = [_pairwise_auc(probs[labels == k, k], probs[labels != k, k]) for k in range(3)]
    assert THREE.auc(labels, probs) == pytest.approx(np.mean(per_class))
    # class 0: 0.7 beats all 4 negatives, 0.3 beats 2 and ties 1 → 6.5/8; class 1 likewise; class 2 perfect
    assert per_class == pytest.approx([0.8125, 0.8125, 1.0])


def test_perfect_separation_auc_is_one():
    labels = np.array([0, 1, 2, 0, 1, 2])
    assert THREE.auc(labels, one_hot_probs(labels, 3)) == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_single_class_auc_is_none():
    labels = np.array([1, 1, 1])
    task = SingleLabel(["a", "b"])
    assert task.auc(labels, one_hot_probs(labels, 2)) is None
    assert task.metrics(labels, one_hot_probs(labels, 2))["auc"] is None


def test_accuracy_is_the_share_of_argmax_hits():
    labels = np.array([0, 1, 2, 2])
    assert THREE.accuracy(labels, one_hot_probs(np.array([0, 1, 1, 2]), 3)) == pytest.approx(0.75)


def test_ece_is_zero_for_confident_correct_predictions():
    labels = np.array([0, 1, 2, 1])
    assert expected_calibration_error(labels, np.eye(3)[labels]) == pytest.approx(0.0)


def test_ece_by_hand():
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.95, 0.05],   # right, confidence 0.95 → bin (0.8, 1]
                      [0.85, 0.15],   # wrong, confidence 0.85 → bin (0.8, 1]
                      [0.35, 0.65],   # right, confidence 0.65 → bin (0.6, 0.8]
                      [0.75, 0.25]])  # right, confidence 0.75 → bin (0.6, 0.8]
    # bin (0.8,1]: |0.90 − 0.5| · 2/4 = 0.2; bin (0.6,0.8]: |0.70 − 1| · 2/4 = 0.15
    assert expected_calibration_error(labels, probs, bins=5) == pytest.approx(0.35)
    # one bin for everything: |0.8 − 0.75| = 0.05
    assert expected_calibration_error(labels, probs, bins=1) == pytest.approx(0.05)


def test_bootstrap_ci_brackets_estimate_and_is_deterministic():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    preds = np.where(rng.random(60) < 0.8, labels, 1 - labels)
    probs = one_hot_probs(preds, 2)
    point = BINARY.accuracy(labels, probs)
    ci = bootstrap_ci(labels, probs, BINARY.accuracy, samples=200, seed=1)
    assert len(ci) == 2 and ci[0] < point < ci[1]
    assert 0.0 <= ci[0] and ci[1] <= 1.0
    assert bootstrap_ci(labels, probs, BINARY.accuracy, samples=200, seed=1) == ci
    narrow = bootstrap_ci(labels, probs, BINARY.accuracy, samples=200, seed=1, level=0.5)
    assert ci[0] <= narrow[0] <= narrow[1] <= ci[1]


def test_bootstrap_ci_none_when_metric_always_undefined():
    labels = np.zeros(5, dtype=int)
    assert bootstrap_ci(labels, one_hot_probs(labels, 2), BINARY.auc, samples=20, seed=0) is None


def test_agreement():
    reference = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.55, 0.45]])
    other = np.array([[0.8, 0.2], [0.45, 0.55], [0.3, 0.7], [0.45, 0.55]])
    result = BINARY.agreement(reference, other)
    assert result["top1_agreement"] == pytest.approx(0.75)  # last row flips
    assert result["max_abs_prob_diff"] == pytest.approx(0.1)
    assert BINARY.agreement(reference, reference) == {"top1_agreement": 1.0, "max_abs_prob_diff": 0.0}


def test_label_aucs_are_none_for_a_label_with_one_answer():
    labels = np.array([[0, 1], [1, 1], [0, 1], [1, 1]])
    probs = np.array([[0.2, 0.5], [0.7, 0.5], [0.6, 0.5], [0.9, 0.5]])
    # label 0: positives 0.7, 0.9 against negatives 0.2, 0.6: all four pairs ranked right
    assert label_aucs(labels, probs) == [pytest.approx(1.0), None]


def test_mean_defined_skips_undefined_values():
    assert mean_defined([0.5, None, 1.0]) == pytest.approx(0.75)
    assert mean_defined([None, None]) is None


def test_f1_thresholds_keep_the_default_for_a_label_never_present():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    probs = np.array([[0.3, 0.9], [0.1, 0.8], [0.4, 0.7], [0.2, 0.6]])
    # label 0: cutting at 0.3 keeps both positives and no negative (F1 = 1); label 1: F1 undefined
    np.testing.assert_allclose(f1_thresholds(labels, probs, default=0.5), [0.3, 0.5])
