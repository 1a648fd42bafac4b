"""Task-agnostic scoring helpers (scikit-learn underneath) that the task types compose into their metrics.

Every artifact (torch, ONNX, TFLite) is scored on the output of `runtimes.predict` by its task's
`metrics` (`lib.task`), so differences between formats are differences in the models, not in the scoring.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import multilabel_confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve


def label_aucs(labels: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """ROC AUC of each label of a multi-label matrix; None for a label present on every image or none."""
    return [float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None for y, p in zip(labels.T, probs.T)]


def mean_defined(values: list[float | None]) -> float | None:
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


def f1_thresholds(labels: np.ndarray, probs: np.ndarray, default: float) -> np.ndarray:
    """Per label, the probability threshold that maximises F1 on these (validation) predictions.

    A label never present keeps `default`, where F1 is undefined whatever the threshold.
    """
    out = np.full(labels.shape[1], default)
    for i, (y, p) in enumerate(zip(labels.T, probs.T)):
        if y.any():
            precision, recall, cuts = precision_recall_curve(y, p)
            f1 = np.divide(2 * precision * recall, precision + recall,
                           out=np.zeros_like(precision), where=precision + recall > 0)
            out[i] = cuts[int(np.argmax(f1[:-1]))]
    return out


def youden_threshold(labels: np.ndarray, scores: np.ndarray, prefer: float = 0.5) -> float | None:
    """The threshold on `scores` (positive when a score reaches it) that maximises Youden's J = sensitivity +
    specificity − 1, i.e. balanced accuracy, on these (validation) 0/1 labels.

    The candidates are `roc_curve`'s cuts (every distinct score) and `prefer` itself; of equally good ones the
    closest to `prefer` wins, so a split on which `prefer` is already best keeps it. None when a class is missing.
    """
    if len(np.unique(labels)) < 2:
        return None
    fpr, tpr, cuts = roc_curve(labels, scores, drop_intermediate=False)  # every cut: ties must all be seen
    finite = np.isfinite(cuts)  # the first cut (inf) marks nothing positive
    preferred = scores >= prefer
    candidates = np.append(cuts[finite], prefer)
    j = np.append((tpr - fpr)[finite], preferred[labels == 1].mean() - preferred[labels == 0].mean())
    best = candidates[np.isclose(j, j.max(), rtol=0.0, atol=1e-9)]
    return float(best[np.argmin(np.abs(best - prefer))])


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
