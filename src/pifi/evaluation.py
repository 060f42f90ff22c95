"""Test-split metrics and per-row predictions, so methods can be compared on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def classification_metrics(labels: np.ndarray, predictions: np.ndarray,
                           num_classes: int | None = None) -> dict[str, float]:
    """Accuracy, macro-F1 and Matthews correlation.

    Macro-F1 averages over all ``num_classes`` classes (0..C-1), also those absent from this split:
    averaging over whichever classes appear would change its meaning from run to run. A class that
    is neither present nor predicted scores 0. Without ``num_classes``, C is the largest class seen
    plus one, which misses an absent highest class: pass it.
    """
    classes = _classes(labels, predictions, num_classes)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0.0)),
        "mcc": float(matthews_corrcoef(labels, predictions)),  # classes absent from both add only zeros
    }


def per_class_f1(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> list[float]:
    """F1 of each class 0..C-1, in class order; a class neither present nor predicted scores 0."""
    classes = _classes(labels, predictions, num_classes)
    return [float(v) for v in f1_score(labels, predictions, labels=classes, average=None, zero_division=0.0)]


def _classes(labels: np.ndarray, predictions: np.ndarray, num_classes: int | None) -> list[int]:
    seen = int(max(np.max(labels, initial=-1), np.max(predictions, initial=-1))) + 1
    if num_classes is None:
        return list(range(seen))
    if seen > num_classes:
        raise ValueError(f"a label or prediction is {seen - 1}, outside the {num_classes} classes 0..{num_classes - 1}")
    return list(range(num_classes))


def num_classes_of(predictions: pd.DataFrame) -> int:
    """C of a frame from ``predictions_frame``: its number of probability columns."""
    return sum(str(column).startswith("prob_") for column in predictions.columns)


def predictions_frame(row_ids: list[str], labels: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """One row per test example: id, label, predicted class and one probability column per class."""
    frame = pd.DataFrame({"row_id": row_ids, "label": labels, "prediction": probabilities.argmax(axis=1)})
    for k in range(probabilities.shape[1]):
        frame[f"prob_{k}"] = probabilities[:, k]
    return frame
