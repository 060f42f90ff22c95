"""The baselines: layer 0 (first), the last layer (last) and layer L // 2 (middle), whatever the data."""

from __future__ import annotations

import numpy as np

from pifi.selectors._declaration import NOTHING, Result, Selector


def first(layers: list[np.ndarray], labels: np.ndarray) -> Result:
    return [-float(layer) for layer in range(len(layers))], None, {}


def last(layers: list[np.ndarray], labels: np.ndarray) -> Result:
    return [float(layer) for layer in range(len(layers))], None, {}


def middle(layers: list[np.ndarray], labels: np.ndarray) -> Result:
    centre = len(layers) // 2
    return [-float(abs(layer - centre)) for layer in range(len(layers))], None, {}


SELECTORS = (Selector("first", NOTHING, first, {}, "baseline: layer 0"),
             Selector("last", NOTHING, last, {}, "baseline: the last layer"),
             Selector("middle", NOTHING, middle, {}, "baseline: layer L // 2"))
