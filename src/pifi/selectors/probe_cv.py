"""probe_cv: k-fold held-out accuracy of a standardized logistic probe on each layer's pooled states."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score

from pifi.selectors._declaration import STATES, Result, Selector, check_folds
from pifi.selectors._probes import ConvergenceWatch, standardized_probe


def probe_cv(layers: list[np.ndarray], labels: np.ndarray, *, folds: int, seed: int) -> Result:
    check_folds("probe_cv", labels, folds)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    fold_accuracy, converged = [], []
    for x in layers:
        with ConvergenceWatch() as watch:
            accuracy = cross_val_score(standardized_probe(), x, labels, cv=cv, scoring="accuracy", error_score="raise")
        fold_accuracy.append(accuracy.tolist())
        converged.append(watch.converged)
    return [float(np.mean(a)) for a in fold_accuracy], converged, {"fold_accuracy": fold_accuracy}


SELECTOR = Selector("probe_cv", STATES, probe_cv, {"folds": 5, "seed": 0},
                    "held-out accuracy of a standardized logistic probe (stratified k-fold)")
