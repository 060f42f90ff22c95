"""What a selector is: its declaration, what it returns, and the rules every selector's scores share.

A selector module of this package declares itself once (``SELECTOR = Selector(...)``): its name, what it
reads, its parameters with their defaults, and its score function. Everything else (the schema's check of
names, the config's limit checks, the rules' wildcards and score-file paths, the summary, the leaderboard)
asks the registry in ``pifi.selectors``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

States = np.ndarray | Sequence[np.ndarray]
Labels = np.ndarray | Sequence[int]
# What a state selector's score function returns: scores, per-layer convergence (None without a probe), details.
Result = tuple[list[float], list[bool] | None, dict]

# What a selector reads, which decides the rule that computes it.
STATES = "states"    # the LLM's cached pooled states of the selection rows (rules layer_scores / layer_effects)
PLUGGED = "plugged"  # the frozen SLM's CLS vectors through each frozen LLM layer (rule plugin_probe)
NOTHING = "nothing"  # only the number of layers (the baselines; rule layer_scores, at no cost)


@dataclass(frozen=True)
class Selector:
    """One selector, declared once.

    score: for STATES and NOTHING, ``score(layers, labels, **params) -> Result`` on a list of N x H arrays and
    N integer labels; for PLUGGED, ``score(features, labels, llm_path, **params) -> list[float]``. Higher = better.
    limits: the parameter names the config checks against the data before any job runs, by what they
    bound: ``folds`` (a stratified k-fold: every fold needs every class) and ``n_components`` (a PCA: at most
    the rows of a (sub)sample and the LLM's hidden size).
    """

    name: str
    reads: str
    score: Callable[..., Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    resampled: bool = True   # stability resamples rerun it on subsets of the samples (False: each would retrain)
    by_default: bool = True  # False: computed only where selection.selectors names it (or is "all"): it costs more
    check: Callable[[Mapping[str, Any], np.ndarray], None] | None = None  # (params, labels) -> raise ValueError

    def __post_init__(self) -> None:
        if self.reads not in (STATES, PLUGGED, NOTHING):
            raise ValueError(f"selector {self.name!r}: reads={self.reads!r} must be one of {STATES!r}, {PLUGGED!r}, "
                             f"{NOTHING!r}")

    def with_defaults(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` over the declared defaults; an unknown parameter is a TypeError naming the allowed ones."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise TypeError(f"selector {self.name!r} got unknown parameter(s) {unknown}; its parameters are: {allowed}")
        return {**self.defaults, **params}


@dataclass(frozen=True)
class LayerScores:
    """A selector's verdict on every layer."""

    selector: str
    scores: list[float]            # one per layer, higher = better
    converged: list[bool] | None   # per layer: did every probe fit converge (None for selectors without a probe)
    details: dict                  # selector-specific extras, JSON-serialisable


def best_layer(scores: Sequence[float]) -> int:
    """The layer with the largest score, the first on ties."""
    return int(np.argmax(np.asarray(scores)))


def selection_margin(scores: Sequence[float]) -> dict[str, float | int | None]:
    """How clearly the best layer wins: the runner-up and the gap to it."""
    scores = np.asarray(scores, dtype=np.float64)
    best = best_layer(scores)
    if len(scores) < 2:
        return {"runner_up_layer": None, "margin": None}
    rest = scores.copy()
    rest[best] = -np.inf
    runner_up = int(np.argmax(rest))
    return {"runner_up_layer": runner_up, "margin": float(scores[best] - scores[runner_up])}


def validated(states: States, labels: Labels) -> tuple[list[np.ndarray], np.ndarray]:
    """The layers as N x H arrays and the labels as a 1-D array, or a ValueError saying what is wrong."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one integer per sample (1-D), got shape {labels.shape}")
    if isinstance(states, np.ndarray) and states.ndim != 3:
        raise ValueError(f"states must be L x N x H (or a list of N x H arrays), got shape {states.shape}")
    layers = [np.asarray(layer) for layer in states]
    if not layers:
        raise ValueError("states hold no layer: expected L x N x H with L >= 1")
    for index, layer in enumerate(layers):
        if layer.ndim != 2 or layer.shape[0] != len(labels):
            raise ValueError(f"layer {index} has shape {layer.shape}; every layer must be N x H with "
                             f"N = {len(labels)} (one row per label)")
    if np.unique(labels).size < 2:
        raise ValueError(f"labels hold a single class ({np.unique(labels).tolist()}); selectors need at least 2")
    return layers, labels


def check_folds(selector: str, labels: np.ndarray, folds: int) -> None:
    """A stratified k-fold needs every class in every fold."""
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    if not 2 <= folds <= smallest:
        raise ValueError(f"{selector}: folds={folds} must be between 2 and the smallest class count ({smallest}) "
                         f"so that every fold holds every class; lower folds or use more samples")
