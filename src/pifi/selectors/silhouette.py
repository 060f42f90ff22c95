"""silhouette: the silhouette of the classes on standardized, PCA-reduced pooled states."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pifi.selectors._declaration import STATES, Result, Selector


def silhouette(layers: list[np.ndarray], labels: np.ndarray, *, n_components: int, seed: int) -> Result:
    scores = []
    for index, x in enumerate(layers):
        if not 1 <= n_components <= min(x.shape):
            raise ValueError(f"silhouette: n_components={n_components} must be between 1 and min(N, H) = "
                             f"{min(x.shape)} for layer {index} of shape {x.shape}; lower n_components")
        reduced = make_pipeline(StandardScaler(), PCA(n_components, random_state=seed)).fit_transform(x)
        scores.append(float(silhouette_score(reduced, labels, metric="euclidean")))
    return scores, None, {}


SELECTOR = Selector("silhouette", STATES, silhouette, {"n_components": 16, "seed": 0},
                    "silhouette of the classes on standardized, PCA-reduced states")
