"""Single-label classification: one class per image (binary, multi-class, or ordinal grades as classes).

Softmax over the classes, cross-entropy (and KL divergence for distillation), argmax decisions. With two
classes the benchmark also scores a threshold on the positive (second) class's probability chosen on val: the
one that maximises balanced accuracy there (`lib.metrics.youden_threshold`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from torch import nn

from lib.errors import UserError
from lib.metrics import expected_calibration_error, per_class_rates, youden_threshold
from lib.task.base import Task, Top, check_not_empty


class SingleLabel(Task):
    name = "multi-class"
    kind, activation_name, count_unit = "single-label", "softmax", "images"
    carve_rule = "stratified"
    agreement_kind, agreement_key = "top-1", "top1_agreement"
    fixed_rule = "argmax"

    @staticmethod
    def parse_labels(y: np.ndarray, path: Path) -> np.ndarray:
        """Class indices (N,) or (N, 1), or one-hot rows (N, K) → int64 (N,)."""
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        elif y.ndim == 2:
            if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
                raise UserError(f"{path}: 2-D labels must be one-hot (a single 1 per row); got shape {y.shape}")
            y = y.argmax(axis=1)
        if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
            raise UserError(f"{path}: labels must be integers of shape (N,) or one-hot (N, K); "
                            f"got {y.dtype} of shape {y.shape}")
        return y.astype(np.int64)

    @staticmethod
    def count_outputs(labels: list[np.ndarray]) -> int:
        return int(max(y.max(initial=0) for y in labels)) + 1

    def check_splits(self, labels: dict[str, np.ndarray]) -> None:
        classes = self.classes
        if len(classes) < 2:
            raise UserError(f"found {len(classes)} class(es); a classifier needs at least 2")
        check_not_empty(labels)
        for split, y in labels.items():
            if y.min() < 0 or y.max() >= len(classes):
                raise UserError(f"split {split!r}: labels must lie in 0..{len(classes) - 1} "
                                f"(classes: {', '.join(classes)}); found {y.min()}..{y.max()}")
        missing = sorted(set(range(len(classes))) - set(labels["train"].tolist()))
        if missing:
            raise UserError(f"the train split has no image of class(es) {[classes[i] for i in missing]}")

    def stratify(self, labels: np.ndarray) -> np.ndarray:
        return labels

    def class_counts(self, labels: np.ndarray) -> dict[str, int]:
        return {c: int((labels == i).sum()) for i, c in enumerate(self.classes)}

    def meta_entry(self) -> dict:
        """Nothing: a meta.json without `task` is single-label, so such data keeps the bytes (and hash) it
        had before task types existed."""
        return {}

    def activation(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, axis=1)

    def hard_loss(self, weight: torch.Tensor | None, label_smoothing: float) -> nn.Module:
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def soft_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """KL(softmax(t) ‖ softmax(s)) per image."""
        return F.kl_div(F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits, dim=1),
                        reduction="batchmean", log_target=True)

    def class_weights(self, labels: np.ndarray, mode: str) -> torch.Tensor | None:
        """'balanced': n_samples / (n_classes · count), as scikit-learn's `class_weight='balanced'`."""
        if mode == "none":
            return None
        from sklearn.utils.class_weight import compute_class_weight
        weights = compute_class_weight("balanced", classes=np.arange(len(self.classes)), y=labels)
        return torch.tensor(weights, dtype=torch.float32)

    def metrics(self, labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> dict:
        return {**self._decided(labels, probs.argmax(axis=1)), "auc": self.auc(labels, probs),
                "ece": expected_calibration_error(labels, probs)}

    def _decided(self, labels: np.ndarray, preds: np.ndarray) -> dict:
        """The figures that depend on the decisions `preds` (AUC and ECE depend on the probabilities only)."""
        return {
            "accuracy": float(accuracy_score(labels, preds)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, preds)),
            "f1_macro": float(f1_score(labels, preds, average="macro",
                                       labels=list(range(len(self.classes))), zero_division=0)),
            "per_class": per_class_rates(labels, preds, self.classes),
            "predicted_counts": {name: int((preds == i).sum()) for i, name in enumerate(self.classes)},
        }

    def accuracy(self, labels: np.ndarray, probs: np.ndarray, threshold: float | None = None) -> float:
        return float(accuracy_score(labels, _decide(probs, threshold)))

    def check_decision(self, rule: str, val_labels: np.ndarray) -> None:
        """`val_threshold` needs two classes, both present in val (where its threshold is chosen)."""
        if rule != "val_threshold" or len(self.classes) != 2:
            return super().check_decision(rule, val_labels)
        missing = [c for i, c in enumerate(self.classes) if not (val_labels == i).any()]
        if missing:
            raise UserError(f"benchmark.decision: val_threshold is chosen on the val split, which holds no image "
                            f"of class {missing[0]!r}; set benchmark.decision: argmax or give val both classes")

    def fit_decision(self, labels: np.ndarray, probs: np.ndarray) -> dict:
        """Two classes: the threshold on the positive class's probability with the best balanced accuracy on
        these (validation) predictions, and the figures it gives there; argmax otherwise (or when a class is
        missing here, where balanced accuracy is undefined)."""
        threshold = youden_threshold(labels, probs[:, 1]) if len(self.classes) == 2 else None
        if threshold is None:
            return {"rule": self.fixed_rule}
        decision = {"rule": "val_threshold", "positive_class": self.classes[1], "threshold": threshold}
        return {**decision, "val": self.decision_figures(labels, probs, decision)}

    def decision_figures(self, labels: np.ndarray, probs: np.ndarray, decision: dict) -> dict | None:
        if decision["rule"] != "val_threshold":
            return None
        return self._decided(labels, _decide(probs, decision["threshold"]))

    def auc(self, labels: np.ndarray, probs: np.ndarray) -> float | None:
        """Positive-class probability for two classes, one-vs-rest macro for more; None when a class is
        missing from `labels`, where AUC is undefined."""
        if len(np.unique(labels)) < 2:
            return None
        if probs.shape[1] == 2:
            return float(roc_auc_score(labels, probs[:, 1]))
        if len(np.unique(labels)) < probs.shape[1]:
            return None
        return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))

    def agreement(self, reference: np.ndarray, probs: np.ndarray) -> dict:
        """The share of images with the same top class."""
        return {"top1_agreement": float((reference.argmax(axis=1) == probs.argmax(axis=1)).mean()),
                "max_abs_prob_diff": float(np.abs(reference - probs).max())}

    def majority_baseline(self, train_labels: np.ndarray, labels: np.ndarray) -> dict:
        majority = int(np.bincount(train_labels).argmax())
        return {"class": self.classes[majority], "test": {"accuracy": float((labels == majority).mean())}}

    def collapse_warnings(self, what: str, split: str, metrics: dict) -> list[str]:
        predicted = [name for name, n in metrics["predicted_counts"].items() if n > 0]
        if len(predicted) != 1:
            return []
        return [f"{what} predicts {predicted[0]!r} for every {split} image: the model has collapsed "
                "to a constant output"]

    def answers(self, labels: np.ndarray, probs: np.ndarray) -> tuple[list, list]:
        return [int(y) for y in labels], [int(p) for p in probs.argmax(axis=1)]

    def roc_inputs(self, labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Binary: the positive class's scores; more classes: micro-averaged (every class pooled)."""
        if probs.shape[1] == 2:
            return labels, probs[:, 1]
        onehot = np.eye(probs.shape[1], dtype=int)[labels]
        return onehot.ravel(), probs.ravel()

    def confusion(self, labels: np.ndarray, probs: np.ndarray) -> tuple[list[str], list[str]]:
        return [self.classes[i] for i in labels], [self.classes[i] for i in probs.argmax(axis=1)]

    def sample_groups(self, labels: np.ndarray) -> np.ndarray:
        return labels

    def describe(self, label: np.ndarray) -> str:
        return self.classes[label]

    def default_top(self) -> int:
        return 1

    def answer(self, top: Top, threshold: float) -> dict:
        return {"predicted": top[0][0], "probability": top[0][1]}


def _decide(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """Argmax; with a `threshold`, the positive (second) class where its probability reaches it."""
    if threshold is None:
        return probs.argmax(axis=1)
    return (probs[:, 1] >= threshold).astype(np.int64)
