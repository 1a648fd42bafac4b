"""Multi-label classification: any set of labels per image (e.g. ChestMNIST's 14 findings).

A sigmoid and a binary cross-entropy per label; a label is present when its probability reaches
`THRESHOLD` (0.5). `accuracy` is the mean per-label accuracy (1 − Hamming loss), `exact_match` the share
of images with every label right, `balanced_accuracy` the mean over labels of (sensitivity + specificity)
/ 2, `auc` the mean per-label ROC AUC, `f1_macro` the mean per-label F1. Per-label thresholds that
maximise F1 on val are reported beside the 0.5 figures (`tuned`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from lib.errors import UserError
from lib.metrics import expected_calibration_error, f1_thresholds, label_aucs, mean_defined, per_class_rates
from lib.task.base import Task, Top, check_not_empty

THRESHOLD = 0.5  # a label is present when its probability reaches this


class MultiLabelBCE(nn.Module):
    """BCE on each label's logit against a 0/1 label matrix; label smoothing ε moves targets to ε/2, 1 − ε/2."""

    def __init__(self, pos_weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        targets = labels.float() * (1.0 - self.label_smoothing) + self.label_smoothing / 2
        return self.bce(logits.float(), targets)


class MultiLabel(Task):
    name = "multi-label"
    kind, activation_name, count_unit = "multi-label", "sigmoid", "images with the label"
    carve_rule = "at random"  # label combinations are too many to stratify by
    agreement_kind, agreement_key = "label", "label_agreement"
    table_extra = ("positive",)
    fixed_rule = "threshold_0.5"

    @staticmethod
    def parse_labels(y: np.ndarray, path: Path) -> np.ndarray:
        """A 0/1 matrix (N, L) → uint8."""
        if y.ndim != 2 or y.shape[1] < 2:
            raise UserError(f"{path}: labels of shape {y.shape} in a multi-label data set (another split has a "
                            "0/1 label matrix); give every split a 0/1 matrix (N, L) with one column per label")
        if not np.isin(y, (0, 1)).all():
            raise UserError(f"{path}: a 2-D label matrix must hold only 0 and 1 (one column per label, 1 = "
                            f"present); found values {np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()}")
        return y.astype(np.uint8)

    @staticmethod
    def count_outputs(labels: list[np.ndarray]) -> int:
        return labels[0].shape[1]

    @staticmethod
    def describes(y: np.ndarray) -> bool:
        """A label array (N, L > 1) with a row that is not one-hot (no 1, or several) is multi-label."""
        return y.ndim == 2 and y.shape[1] > 1 and not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all())

    def check_splits(self, labels: dict[str, np.ndarray]) -> None:
        """One column per label name in every split; each label both present and absent in train."""
        check_not_empty(labels)
        for split, y in labels.items():
            if y.shape[1] != len(self.classes):
                raise UserError(f"split {split!r} has {y.shape[1]} label columns but there are "
                                f"{len(self.classes)} label names ({', '.join(self.classes)}); make classes.txt "
                                "list one name per column")
        constant = [name for name, column in zip(self.classes, labels["train"].T) if column.min() == column.max()]
        if constant:
            raise UserError(f"label(s) {constant} are present on every train image or on none; each label "
                            "needs positive and negative training images")

    def stratify(self, labels: np.ndarray) -> None:
        return None

    def class_counts(self, labels: np.ndarray) -> dict[str, int]:
        return {c: int(labels[:, i].sum()) for i, c in enumerate(self.classes)}

    def activation(self, logits: np.ndarray) -> np.ndarray:
        return expit(logits)

    def hard_loss(self, weight: torch.Tensor | None, label_smoothing: float) -> nn.Module:
        return MultiLabelBCE(weight, label_smoothing)

    def soft_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """BCE(sigmoid(s), sigmoid(t)) over images and labels: each label's binary KL plus the teacher's
        entropy (a constant: the same gradients)."""
        return F.binary_cross_entropy_with_logits(student_logits, torch.sigmoid(teacher_logits))

    def distillation_temperature(self, configured: float) -> float:
        """1, whatever `distill.temperature` says.

        A temperature softens a softmax so the student sees how the teacher ranks the wrong classes; a label's
        sigmoid has no other classes to rank. At T > 1 the soft term's gradient, T·(σ(s/T) − σ(t/T)), stays
        large on labels the student already gets right (teacher logit 8, student 4: −0.60 at T = 4, −0.02 at
        T = 1), so its steps go to matching the teacher's logit scale instead of to the labels it gets
        wrong. On a 10-label set (3,000 images at 32 px, 8 epochs, teacher test AUC 1.000) the distilled
        MobileNetV2's test AUC went from 0.959 and 0.967 at T = 4 to 0.989 and 0.979 at 1 (seeds 42, 43;
        docs/tasks.md).
        """
        return 1.0

    def class_weights(self, labels: np.ndarray, mode: str) -> torch.Tensor | None:
        """'balanced': negatives / positives per label, BCE's `pos_weight`."""
        if mode == "none":
            return None
        positives = labels.sum(axis=0, dtype=np.float64)
        return torch.tensor((len(labels) - positives) / positives, dtype=torch.float32)

    def check_ensemble_teacher(self) -> None:
        raise UserError("teacher: an ensemble averages the members' softmax probabilities, and this data set is "
                        "multi-label (a sigmoid per label); list one teacher")

    def check_batch_mixing(self) -> None:
        raise UserError("train.mixup_alpha and train.cutmix_alpha mix one class per image into soft targets, and "
                        "this data set is multi-label (a set of labels per image); set both to 0")

    def metrics(self, labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> dict:
        """Figures at threshold 0.5; ECE over every (image, label) pair."""
        preds = (probs >= THRESHOLD).astype(labels.dtype)
        rates = per_class_rates(labels, preds, self.classes)
        aucs = label_aucs(labels, probs)
        f1s = f1_score(labels, preds, average=None, zero_division=0)
        out = {
            "accuracy": float((preds == labels).mean()),
            "exact_match": float(accuracy_score(labels, preds)),
            "balanced_accuracy": mean_defined([_balanced(r) for r in rates.values()]),
            "auc": mean_defined(aucs),
            "f1_macro": float(f1s.mean()),
            "ece": expected_calibration_error(labels.ravel(), np.stack([1 - probs.ravel(), probs.ravel()], axis=1)),
            "per_class": {name: {"auc": auc, "f1": float(f1), **rates[name]}
                          for name, auc, f1 in zip(self.classes, aucs, f1s)},
            "images": len(labels),
            "predicted_positive": {name: int(n) for name, n in zip(self.classes, preds.sum(axis=0))},
        }
        if thresholds is not None:
            out["tuned"] = self._tuned(labels, probs, thresholds)
        return out

    def _tuned(self, labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> dict:
        """Decisions at per-label thresholds chosen on val (maximising F1 there), scored on this split."""
        preds = (probs >= thresholds).astype(labels.dtype)
        f1s = f1_score(labels, preds, average=None, zero_division=0)
        return {"rule": "per-label threshold maximising F1 on val",
                "thresholds": {name: float(t) for name, t in zip(self.classes, thresholds)},
                "accuracy": float((preds == labels).mean()),
                "exact_match": float(accuracy_score(labels, preds)),
                "f1_macro": float(f1s.mean()),
                "f1": {name: float(f1) for name, f1 in zip(self.classes, f1s)}}

    def fit_thresholds(self, labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
        return f1_thresholds(labels, probs, THRESHOLD)

    def fit_decision(self, labels: np.ndarray, probs: np.ndarray) -> dict:
        """The per-label thresholds of `fit_thresholds`; their test figures are `metrics`' `tuned`."""
        thresholds = self.fit_thresholds(labels, probs)
        return {"rule": "val_f1_per_label", "thresholds": {c: float(t) for c, t in zip(self.classes, thresholds)}}

    def deployed_rule(self, tuned: dict | None) -> dict:
        rule = {"rule": "threshold", "threshold": THRESHOLD,
                "text": f"A label is present when its probability (a sigmoid per label) reaches {THRESHOLD}, as "
                        "`lib.predict` decides by default."}
        if tuned:
            rule.update(tuned_thresholds=tuned["thresholds"], tuned_rule=tuned["rule"],
                        text=rule["text"] + f" Per-label thresholds ({tuned['rule']}) are in `tuned_thresholds` "
                                            "of preprocessing.json; `predict.py --tuned` applies them.")
        return rule

    def accuracy(self, labels: np.ndarray, probs: np.ndarray, threshold: float | None = None) -> float:
        return float(((probs >= (THRESHOLD if threshold is None else threshold)) == labels).mean())

    def auc(self, labels: np.ndarray, probs: np.ndarray) -> float | None:
        return mean_defined(label_aucs(labels, probs))

    def agreement(self, reference: np.ndarray, probs: np.ndarray) -> dict:
        """The share of (image, label) decisions at threshold 0.5 that agree."""
        return {"label_agreement": float(((reference >= THRESHOLD) == (probs >= THRESHOLD)).mean()),
                "max_abs_prob_diff": float(np.abs(reference - probs).max())}

    def majority_baseline(self, train_labels: np.ndarray, labels: np.ndarray) -> dict:
        """Each label's majority value: a constant answer scores balanced accuracy 0.5 per label, the figure
        compared (accuracy would flatter it, rare labels being absent almost everywhere)."""
        return {"class": "each label's majority value in train", "test": {"balanced_accuracy": 0.5}}

    def collapse_warnings(self, what: str, split: str, metrics: dict) -> list[str]:
        """The labels predicted present on every image of the split, or on none."""
        constant = [name for name, n in metrics["predicted_positive"].items() if n in (0, metrics["images"])]
        if not constant:
            return []
        return [f"{what} gives label(s) {', '.join(map(repr, constant))} the same answer on every {split} image "
                "(all present or all absent at threshold 0.5): those outputs have collapsed to a constant"]

    def answers(self, labels: np.ndarray, probs: np.ndarray) -> tuple[list, list]:
        """Each image's label set as a 0/1 string (predicted at 0.5), so McNemar tests exact matches."""
        return [_bits(row) for row in labels], [_bits(row >= THRESHOLD) for row in probs]

    def roc_inputs(self, labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (image, label) pair pooled: the micro average."""
        return labels.ravel(), probs.ravel()

    def confusion(self, labels: np.ndarray, probs: np.ndarray) -> None:
        return None

    def sample_groups(self, labels: np.ndarray) -> np.ndarray:
        """Each image's first present label; images with none form one more group."""
        return np.where(labels.any(axis=1), labels.argmax(axis=1), labels.shape[1])

    def describe(self, label: np.ndarray) -> str:
        return ", ".join(self.classes[i] for i in np.flatnonzero(label)) or "none"

    def default_top(self) -> int:
        return len(self.classes)

    def answer(self, top: Top, threshold: float) -> dict:
        return {"positive": [c for c, p in top if p >= threshold], "threshold": threshold}

    def table_cells(self, probability: float, threshold: float) -> tuple[str, ...]:
        return ("yes" if probability >= threshold else "no",)


def _balanced(rates: dict) -> float | None:
    if rates["sensitivity"] is None or rates["specificity"] is None:
        return None
    return (rates["sensitivity"] + rates["specificity"]) / 2


def _bits(row: np.ndarray) -> str:
    return "".join(str(int(v)) for v in row)
