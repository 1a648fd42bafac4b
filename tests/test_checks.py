"""lib.checks: a useless model is reported, a good one is not."""

from __future__ import annotations

from lib import checks
from lib.task import SingleLabel


def metrics_with_counts(**counts: int) -> dict:
    return {"predicted_counts": counts}


def test_constant_prediction_is_reported_per_split():
    task = SingleLabel(["normal", "pneumonia"])
    warnings = checks.collapse_warnings(task, "student", {"val": metrics_with_counts(normal=0, pneumonia=50),
                                                          "test": metrics_with_counts(normal=3, pneumonia=47)})
    assert len(warnings) == 1
    assert "student predicts 'pneumonia' for every val image" in warnings[0]


def test_int8_auc_more_than_five_points_below_float_is_reported():
    assert checks.int8_auc_warning("int8", 0.90, 0.96) != []
    assert checks.int8_auc_warning("int8", 0.92, 0.96) == []
    assert checks.int8_auc_warning("int8", None, 0.96) == []


def test_no_better_than_majority_class_is_reported():
    assert checks.majority_warning("int8", 0.625, 0.625) != []
    assert checks.majority_warning("int8", 0.90, 0.625) == []


def test_announce_prints_each_warning_to_stderr(capsys):
    assert checks.announce(["a", "b"]) == ["a", "b"]
    assert capsys.readouterr().err == "WARNING: a\nWARNING: b\n"
