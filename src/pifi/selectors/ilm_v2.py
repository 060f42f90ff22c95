"""ilm_v2: the ILM reference experiment's authors' later score.

0.4 probe + 0.3 fisher + 0.3 silhouette on L2-normalised states, each min-max scaled over layers, times a
depth penalty 1 - 0.3 l / (L - 1); its probe and silhouette are probe_cv's and silhouette's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pifi.selectors._declaration import STATES, Result, Selector
from pifi.selectors.fisher import fisher
from pifi.selectors.probe_cv import probe_cv
from pifi.selectors.silhouette import silhouette


def _min_max(scores: Sequence[float]) -> np.ndarray:
    """Scaled to [0, 1] over layers; all zeros when every layer scores the same (no layer is preferred)."""
    values = np.asarray(scores, dtype=np.float64)
    values = np.where(np.isposinf(values), np.nanmax(values[np.isfinite(values)], initial=0.0) + 1, values)
    spread = values.max() - values.min()
    return (values - values.min()) / spread if spread > 0 else np.zeros_like(values)


def _l2_normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def ilm_v2(layers: list[np.ndarray], labels: np.ndarray, *, folds: int, n_components: int,
           depth_penalty: float, seed: int) -> Result:
    normalised = [_l2_normalised(x) for x in layers]
    probe, converged, _ = probe_cv(normalised, labels, folds=folds, seed=seed)
    ratio, _, _ = fisher(normalised, labels)
    separation, _, _ = silhouette(normalised, labels, n_components=n_components, seed=seed)
    combined = 0.4 * _min_max(probe) + 0.3 * _min_max(ratio) + 0.3 * _min_max(separation)
    depth = np.arange(len(layers)) / max(len(layers) - 1, 1)
    scores = combined * (1 - depth_penalty * depth)
    details = {"probe_accuracy": probe, "fisher": ratio, "silhouette": separation, "combined": combined.tolist()}
    return scores.tolist(), converged, details


# The authors' weights and penalty; probe and silhouette as probe_cv's.
SELECTOR = Selector("ilm_v2", STATES, ilm_v2, {"folds": 5, "n_components": 16, "depth_penalty": 0.3, "seed": 0},
                    "the reference experiment's authors' later score: probe, fisher and silhouette, depth-penalised")
