"""Classification metrics from labels and predicted probabilities (scikit-learn underneath).

Every artifact (torch, ONNX, TFLite) is scored by these functions on the output of `runtimes.predict`,
so differences between formats are differences in the models, not in the scoring.

Labels decide the task: class indices (N,) are single-label, scored on the argmax of softmax
probabilities; a 0/1 matrix (N, L) is multi-label, scored per label on sigmoid probabilities. There
`accuracy` is the mean per-label accuracy at threshold 0.5 (1 − Hamming loss), `exact_match` the share of
images with every label right, `balanced_accuracy` the mean over labels of (sensitivity + specificity) / 2,
`auc` the mean per-label ROC AUC, `f1_macro` the mean per-label F1 at 0.5. Per-label decision thresholds
that maximise F1 on val are reported beside the 0.5 figures, applied to the split scored (`tuned`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, f1_score,
                             multilabel_confusion_matrix, precision_recall_curve, roc_auc_score)

THRESHOLD = 0.5  # a multi-label decision: label present when its probability reaches this


def auc_score(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC AUC: positive-class probability for two classes, one-vs-rest macro for more.

    None when a split holds a single class, where AUC is undefined. Multi-label: the mean per-label AUC.
    """
    if labels.ndim == 2:
        return _mean(label_aucs(labels, probs))
    if len(np.unique(labels)) < 2:
        return None
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    present = np.unique(labels)
    if len(present) < probs.shape[1]:
        return None
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


def label_aucs(labels: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """ROC AUC of each label of a multi-label matrix; None for a label present on every image or none."""
    return [float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None for y, p in zip(labels.T, probs.T)]


def _mean(values: list[float | None]) -> float | None:
    """Mean of the defined values; None when none is."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


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
    """Sensitivity (recall) and specificity of each class, one-vs-rest (of each label, for a 0/1 matrix)."""
    cms = multilabel_confusion_matrix(labels, preds, labels=list(range(len(classes))))
    rates = {}
    for name, ((tn, fp), (fn, tp)) in zip(classes, cms):
        rates[name] = {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp)}
    return rates


def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den else None


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str],
                           thresholds: np.ndarray | None = None) -> dict:
    """Scores of one split; `thresholds` (multi-label only, chosen on val) adds the `tuned` figures."""
    if labels.ndim == 2:
        return multilabel_metrics(labels, probs, classes, thresholds)
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


def multilabel_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str],
                       thresholds: np.ndarray | None = None) -> dict:
    """Multi-label scores at threshold 0.5 (see the module docstring); ECE over every (image, label) pair."""
    preds = (probs >= THRESHOLD).astype(labels.dtype)
    rates = per_class_rates(labels, preds, classes)
    aucs = label_aucs(labels, probs)
    f1s = f1_score(labels, preds, average=None, zero_division=0)
    out = {
        "accuracy": float((preds == labels).mean()),
        "exact_match": float(accuracy_score(labels, preds)),
        "balanced_accuracy": _mean([_balanced(r) for r in rates.values()]),
        "auc": _mean(aucs),
        "f1_macro": float(f1s.mean()),
        "ece": expected_calibration_error(labels.ravel(), np.stack([1 - probs.ravel(), probs.ravel()], axis=1)),
        "per_class": {name: {"auc": auc, "f1": float(f1), **rates[name]}
                      for name, auc, f1 in zip(classes, aucs, f1s)},
        "images": len(labels),
        "predicted_positive": {name: int(n) for name, n in zip(classes, preds.sum(axis=0))},
    }
    if thresholds is not None:
        out["tuned"] = tuned_metrics(labels, probs, classes, thresholds)
    return out


def _balanced(rates: dict) -> float | None:
    if rates["sensitivity"] is None or rates["specificity"] is None:
        return None
    return (rates["sensitivity"] + rates["specificity"]) / 2


def f1_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per label, the probability threshold that maximises F1 on these (validation) predictions.

    A label never present keeps 0.5, where F1 is undefined whatever the threshold.
    """
    out = np.full(labels.shape[1], THRESHOLD)
    for i, (y, p) in enumerate(zip(labels.T, probs.T)):
        if y.any():
            precision, recall, cuts = precision_recall_curve(y, p)
            f1 = np.divide(2 * precision * recall, precision + recall,
                           out=np.zeros_like(precision), where=precision + recall > 0)
            out[i] = cuts[int(np.argmax(f1[:-1]))]
    return out


def tuned_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str], thresholds: np.ndarray) -> dict:
    """Decisions at per-label thresholds chosen on val (maximising F1 there), scored on this split."""
    preds = (probs >= thresholds).astype(labels.dtype)
    f1s = f1_score(labels, preds, average=None, zero_division=0)
    return {"rule": "per-label threshold maximising F1 on val",
            "thresholds": {name: float(t) for name, t in zip(classes, thresholds)},
            "accuracy": float((preds == labels).mean()),
            "exact_match": float(accuracy_score(labels, preds)),
            "f1_macro": float(f1s.mean()),
            "f1": {name: float(f1) for name, f1 in zip(classes, f1s)}}


def majority_baseline(train_labels: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """The constant answer learnt from train, scored on `labels`: the majority class and its accuracy.

    Multi-label: each label's majority value; a constant answer scores balanced accuracy 0.5 per label,
    the figure compared (accuracy would flatter it, rare labels being absent almost everywhere).
    """
    if labels.ndim == 2:
        return {"class": "each label's majority value in train", "test": {"balanced_accuracy": 0.5}}
    majority = int(np.bincount(train_labels).argmax())
    return {"class": classes[majority], "test": {"accuracy": float((labels == majority).mean())}}


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
    """Top-1 accuracy; multi-label: mean per-label accuracy at threshold 0.5."""
    if labels.ndim == 2:
        return float(((probs >= THRESHOLD) == labels).mean())
    return float(accuracy_score(labels, probs.argmax(axis=1)))


def agreement(reference: np.ndarray, probs: np.ndarray, multi_label: bool = False) -> dict:
    """How closely one artifact reproduces another on the same images.

    Single-label: the share of images with the same top class (`top1_agreement`); multi-label: the share
    of (image, label) decisions at threshold 0.5 that agree (`label_agreement`).
    """
    if multi_label:
        share = {"label_agreement": float(((reference >= THRESHOLD) == (probs >= THRESHOLD)).mean())}
    else:
        share = {"top1_agreement": float((reference.argmax(axis=1) == probs.argmax(axis=1)).mean())}
    return {**share, "max_abs_prob_diff": float(np.abs(reference - probs).max())}
