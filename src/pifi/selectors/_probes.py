"""The logistic-regression probe several selectors fit, and how its convergence is recorded.

Probe fits never print scikit-learn's ConvergenceWarning (a probe per layer would print dozens); whether
they converged is returned per layer, so that callers can log it once.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import log_softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

# Every probe's iteration limit: the ILM reference experiment's LogisticRegression(max_iter=1000).
PROBE_MAX_ITER = 1000


def logistic_probe() -> LogisticRegression:
    """The reference experiment's probe, on the states as they are (PC patching)."""
    return LogisticRegression(max_iter=PROBE_MAX_ITER)


def standardized_probe() -> Pipeline:
    """The same probe on standardized features (probe_cv, mdl, ilm_v2)."""
    return make_pipeline(StandardScaler(), logistic_probe())


def probe_log_proba(probe: Pipeline, x: np.ndarray) -> np.ndarray:
    """log p(class | x), N x C in the order of probe.classes_, without the underflow of log(predict_proba)."""
    decision = np.asarray(probe.decision_function(x), dtype=np.float64)
    if decision.ndim == 1:  # binary: the decision is the logit of classes_[1] against classes_[0]
        decision = np.stack([np.zeros_like(decision), decision], axis=1)
    return log_softmax(decision, axis=1)


class ConvergenceWatch:
    """Context manager that catches scikit-learn's ConvergenceWarnings raised inside it.

    None is printed; ``converged`` is False afterwards when at least one was raised, so callers can record
    it and log one line. Other warnings pass through.
    """

    def __enter__(self) -> ConvergenceWatch:
        self.converged = True
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always", ConvergenceWarning)
        return self

    def __exit__(self, *exc_info) -> None:
        self._catcher.__exit__(*exc_info)
        for caught in self._caught:
            if issubclass(caught.category, ConvergenceWarning):
                self.converged = False
            else:
                warnings.warn_explicit(caught.message, caught.category, caught.filename, caught.lineno)
