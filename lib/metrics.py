"""Classification metrics from labels and predicted probabilities (scikit-learn underneath).

Every artifact (torch, ONNX, TFLite) is scored by these functions on the output of `runtimes.predict`,
so differences between formats are differences in the models, not in the scoring.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, f1_score,
                             multilabel_confusion_matrix, roc_auc_score)


def auc_score(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC AUC: positive-class probability for two classes, one-vs-rest macro for more.

    None when a split holds a single class, where AUC is undefined.
    """
    if len(np.unique(labels)) < 2:
        return None
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    present = np.unique(labels)
    if len(present) < probs.shape[1]:
        return None
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: mean |confidence − accuracy| over equal-width confidence bins, weighted by count."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return float(ece)


def per_class_rates(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> dict:
    """Sensitivity (recall) and specificity of each class, one-vs-rest."""
    cms = multilabel_confusion_matrix(labels, preds, labels=list(range(len(classes))))
    rates = {}
    for name, ((tn, fp), (fn, tp)) in zip(classes, cms):
        rates[name] = {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp)}
    return rates


def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den else None


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    preds = probs.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, preds)),
        "auc": auc_score(labels, probs),
        "f1_macro": float(f1_score(labels, preds, average="macro",
                                   labels=list(range(len(classes))), zero_division=0)),
        "ece": expected_calibration_error(labels, probs),
        "per_class": per_class_rates(labels, preds, classes),
        "predicted_counts": {name: int((preds == i).sum()) for i, name in enumerate(classes)},
    }


def bootstrap_ci(labels: np.ndarray, probs: np.ndarray,
                 metric: Callable[[np.ndarray, np.ndarray], float | None],
                 samples: int, seed: int, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of `metric(labels, probs)` over resampled test sets."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        idx = rng.integers(0, len(labels), len(labels))
        value = metric(labels[idx], probs[idx])
        if value is not None:
            values.append(value)
    if not values:
        return None
    tail = (1.0 - level) / 2 * 100
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


def accuracy_from_probs(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(accuracy_score(labels, probs.argmax(axis=1)))


def agreement(reference: np.ndarray, probs: np.ndarray) -> dict:
    """How closely one artifact reproduces another on the same images."""
    return {"top1_agreement": float((reference.argmax(axis=1) == probs.argmax(axis=1)).mean()),
            "max_abs_prob_diff": float(np.abs(reference - probs).max())}
