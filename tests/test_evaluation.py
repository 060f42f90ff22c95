"""Test-split metrics (accuracy, macro-F1, MCC) against values computed by hand, and per-row predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pifi.evaluation import classification_metrics, num_classes_of, per_class_f1, predictions_frame


def test_binary_metrics_match_the_confusion_matrix_by_hand():
    # Confusion (rows = true, columns = predicted): [[TN=3, FP=1], [FN=2, TP=4]]
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    predictions = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1])
    tn, fp, fn, tp = 3, 1, 2, 4
    f1_positive = 2 * tp / (2 * tp + fp + fn)           # 8 / 11
    f1_negative = 2 * tn / (2 * tn + fn + fp)           # 6 / 9
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))  # 10 / sqrt(600)
    metrics = classification_metrics(labels, predictions)
    assert set(metrics) == {"accuracy", "macro_f1", "mcc"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["macro_f1"] == pytest.approx((8 / 11 + 6 / 9) / 2)
    assert metrics["mcc"] == pytest.approx(10 / math.sqrt(600))
    assert metrics["macro_f1"] == pytest.approx((f1_positive + f1_negative) / 2)
    assert metrics["mcc"] == pytest.approx(mcc)


def test_macro_f1_is_not_the_positive_class_f1_nor_micro():
    # An imbalanced case where binary F1, micro-F1 (= accuracy) and macro-F1 all differ.
    labels = np.array([0] * 8 + [1] * 2)
    predictions = np.array([0] * 7 + [1] + [1, 0])
    # class 0: tp 7, fp 1, fn 1 -> F1 7/8; class 1: tp 1, fp 1, fn 1 -> F1 1/2
    metrics = classification_metrics(labels, predictions)
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["macro_f1"] == pytest.approx((7 / 8 + 1 / 2) / 2)
    # MCC = (TP*TN - FP*FN) / sqrt(...) with TP 1, TN 7, FP 1, FN 1
    assert metrics["mcc"] == pytest.approx((7 - 1) / math.sqrt(2 * 2 * 8 * 8))


def test_three_class_metrics_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    predictions = np.array([0, 0, 1, 1, 1, 2, 2, 0, 2])
    # Confusion C[true, pred]: [[2,1,0],[0,2,1],[1,0,2]]
    # per-class F1: class 0 tp2 fp1 fn1 -> 2/3; class 1 tp2 fp1 fn1 -> 2/3; class 2 tp2 fp1 fn1 -> 2/3
    # Gorodkin's multiclass MCC: c = 6 correct, s = 9 samples, t_k = (3,3,3) true, p_k = (3,3,3) predicted
    # (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)) = (54 - 27) / (81 - 27) = 0.5
    metrics = classification_metrics(labels, predictions)
    assert metrics["accuracy"] == pytest.approx(6 / 9)
    assert metrics["macro_f1"] == pytest.approx(2 / 3)
    assert metrics["mcc"] == pytest.approx(0.5)


def test_three_class_metrics_with_unequal_per_class_scores():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 0, 0, 0, 1, 2, 2, 2])
    # class 0: F1 1; class 1: tp1 fn1 -> 2/3; class 2: tp2 fp1 -> 4/5
    # MCC: c = 7, s = 8, t = (4,2,2), p = (4,1,3): (56 - (16+2+6)) / sqrt((64-26)(64-24)) = 32 / sqrt(1520)
    metrics = classification_metrics(labels, predictions)
    assert metrics["accuracy"] == pytest.approx(7 / 8)
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 4 / 5) / 3)
    assert metrics["mcc"] == pytest.approx(32 / math.sqrt(1520))


def test_perfect_and_inverted_predictions():
    labels = np.array([0, 1, 0, 1, 1, 0])
    perfect = classification_metrics(labels, labels)
    assert perfect == {"accuracy": 1.0, "macro_f1": 1.0, "mcc": 1.0}
    inverted = classification_metrics(labels, 1 - labels)
    assert inverted["accuracy"] == 0.0 and inverted["macro_f1"] == 0.0
    assert inverted["mcc"] == pytest.approx(-1.0)


def test_predictions_frame_has_one_row_per_example():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]], dtype=np.float32)
    frame = predictions_frame(["a", "b", "c"], np.array([0, 2, 0]), probabilities)
    assert list(frame.columns) == ["row_id", "label", "prediction", "prob_0", "prob_1", "prob_2"]
    assert frame["row_id"].tolist() == ["a", "b", "c"]
    assert frame["prediction"].tolist() == [0, 2, 1]
    np.testing.assert_array_equal(frame[["prob_0", "prob_1", "prob_2"]].to_numpy(), probabilities)


def test_macro_f1_averages_over_all_classes_also_one_absent_from_test():
    """Class 2 exists (C = 3) but no test row has it, and it is predicted once: its F1 is 0 and still
    counts, so macro-F1 means the same whichever classes a test split happens to hold."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    predictions = np.array([0, 0, 2, 1, 1, 1])
    # class 0: tp 2, fn 1 -> 4/5; class 1: tp 3 -> 1; class 2: fp 1, no row -> 0
    metrics = classification_metrics(labels, predictions, num_classes=3)
    assert metrics["macro_f1"] == pytest.approx((4 / 5 + 1 + 0) / 3)
    assert per_class_f1(labels, predictions, 3) == pytest.approx([4 / 5, 1.0, 0.0])
    # a class neither present nor predicted also counts, as 0: the same C whatever the split holds
    assert classification_metrics(labels, labels, num_classes=3)["macro_f1"] == pytest.approx(2 / 3)
    assert per_class_f1(labels, labels, 3) == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="outside the 2 classes"):
        classification_metrics(labels, predictions, num_classes=2)


def test_num_classes_of_a_predictions_frame_is_its_probability_columns():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    assert num_classes_of(predictions_frame(["a", "b"], np.array([0, 0]), probabilities)) == 3
