"""Test-split metrics and per-row predictions, so methods can be compared on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and Matthews correlation."""
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro")),
        "mcc": float(matthews_corrcoef(labels, predictions)),
    }


def predictions_frame(row_ids: list[str], labels: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """One row per test example: id, label, predicted class and one probability column per class."""
    frame = pd.DataFrame({"row_id": row_ids, "label": labels, "prediction": probabilities.argmax(axis=1)})
    for k in range(probabilities.shape[1]):
        frame[f"prob_{k}"] = probabilities[:, k]
    return frame
