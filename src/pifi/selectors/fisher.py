"""fisher: the trace Fisher ratio tr(S_b) / tr(S_w) of the classes on z-scored pooled states."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import calinski_harabasz_score

from pifi.selectors._declaration import STATES, Result, Selector


def _standardized(x: np.ndarray) -> np.ndarray:
    """Each feature z-scored over the rows (float64); constant features dropped (they carry nothing)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[:, np.ptp(x, axis=0) > 0]
    return (x - x.mean(axis=0)) / x.std(axis=0)


def _class_means(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row replaced by its class's mean row."""
    means = np.empty_like(z)
    for k in np.unique(labels):
        means[labels == k] = z[labels == k].mean(axis=0)
    return means


def fisher_ratio(x: np.ndarray, labels: np.ndarray) -> float:
    """tr(S_b) / tr(S_w) on z-scored features; inf when every row sits on its class mean.

    scikit-learn's Calinski-Harabasz index is this ratio times (N - C) / (C - 1), a constant for one
    set of samples: rescaled, it keeps the plain ratio (comparable across sample sizes) and its ranking.
    """
    z = _standardized(x)
    if z.shape[1] == 0:
        return 0.0
    classes = np.unique(labels).size
    if not np.any(z - _class_means(z, labels)):
        return math.inf  # scikit-learn returns 1.0 here; a perfect separation should win, not tie
    return float(calinski_harabasz_score(z, labels)) * (classes - 1) / (len(labels) - classes)


def fisher(layers: list[np.ndarray], labels: np.ndarray) -> Result:
    scores = [fisher_ratio(x, labels) for x in layers]
    used = [int((np.ptp(x, axis=0) > 0).sum()) for x in layers]
    return scores, None, {"features_used": used}


SELECTOR = Selector("fisher", STATES, fisher, {}, "trace Fisher ratio tr(S_b) / tr(S_w) on z-scored states")
