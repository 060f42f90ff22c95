"""Layer selectors: one score per decoder layer, higher = better, each declared once in its own module here.

The pipeline plugs the best-scoring layer into PiFi and judges every selector against a training sweep over
the layers (docs/design.md, "Judging a selector"). A module of this package whose name does not start with
``_`` declares ``SELECTOR = Selector(...)`` (or ``SELECTORS = (...)``); the registry below collects them, and
the schema check, the config's limits, the rules, the summary and the leaderboard all ask it.
Adding a selector = one file here + one test.

    ilm_pc_patching  the ILM reference experiment's PC patching (pc_patching.py), the default
    probe_cv, fisher, silhouette, mdl, logme, ilm_v2: from the LLM's pooled states (reads STATES, rule
                     layer_scores)
    first, last, middle  baselines that read nothing but the number of layers (NOTHING, rule layer_scores)
    plugin_probe     the layer as PiFi uses it, from the SLM's CLS vectors and the LLM's weights (reads PLUGGED)
    plugin_probe_finetuned  the same from the fine-tuned base run's CLS vectors (opt-in: by_default=False)
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import numpy as np

from pifi.selectors._declaration import (NOTHING, PLUGGED, STATES, Labels, LayerScores, Selector, States,
                                         best_layer, selection_margin, validated)

__all__ = ["ALL_SELECTORS", "NOTHING", "PATCHING", "PLUGGED", "PLUGIN_PROBE", "SELECTORS", "STATES",
           "STATE_SELECTORS", "LayerScores", "Selector", "best_layer", "declared", "score_layers",
           "score_layers_detailed", "score_plugged_layers", "selection_margin", "selection_stability", "selector_params"]


def _discover() -> dict[str, Selector]:
    found: dict[str, Selector] = {}
    for module in sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")):
        namespace = vars(importlib.import_module(f"{__name__}.{module}"))
        declared_here = [namespace["SELECTOR"]] if "SELECTOR" in namespace else list(namespace.get("SELECTORS", ()))
        if not declared_here or not all(isinstance(s, Selector) for s in declared_here):
            raise ImportError(f"pifi.selectors.{module} declares no selector: a selector module sets "
                              f"SELECTOR = Selector(...) or SELECTORS = (Selector(...), ...)")
        for selector in declared_here:
            if selector.name in found:
                raise ImportError(f"selector {selector.name!r} is declared twice (pifi.selectors.{module})")
            found[selector.name] = selector
    return found


_REGISTRY = _discover()
PATCHING = _REGISTRY["ilm_pc_patching"].name       # the reference experiment's score: its own rules and effects.json
PLUGIN_PROBE = _REGISTRY["plugin_probe"].name      # CLS vectors through each layer: its own rules, per SLM
# Every declared selector, the default first, then by name: the order of every comparison.
ALL_SELECTORS: tuple[str, ...] = (PATCHING, *sorted(set(_REGISTRY) - {PATCHING}))
# The ones computed when selection.selectors is left out (the opt-in ones cost a training run or more).
SELECTORS: tuple[str, ...] = tuple(name for name in ALL_SELECTORS if _REGISTRY[name].by_default)
# The ones score_layers computes from pooled states (the baselines only count their layers).
STATE_SELECTORS: tuple[str, ...] = tuple(name for name in ALL_SELECTORS if _REGISTRY[name].reads != PLUGGED)


def declared(name: str) -> Selector:
    """Selector ``name``'s declaration, or a ValueError naming the selectors there are."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown selector {name!r}; choose one of {', '.join(ALL_SELECTORS)}")
    return _REGISTRY[name]


def selector_params(name: str) -> dict[str, Any]:
    """The default parameters of selector ``name`` (a copy), so that a run can record what it used."""
    return dict(declared(name).defaults)


def _state_selector(name: str) -> Selector:
    selector = declared(name)
    if selector.reads == PLUGGED:
        raise ValueError(f"{name} scores layers from the SLM's CLS vectors and the LLM's weights, not from pooled "
                         "states: call pifi.selectors.score_plugged_layers(features, labels, llm_path)")
    return selector


def score_plugged_layers(vectors, labels, llm_path, *, layers=None, **params) -> list[float]:
    """plugin_probe's score per layer (higher = better) from CLS ``vectors``; see
    ``pifi.plugin_probe.score_plugged_layers``."""
    return declared(PLUGIN_PROBE).score(vectors, labels, llm_path, layers=layers, **params)


def score_layers_detailed(name: str, states: States, labels: Labels, **params) -> LayerScores:
    """Score every layer with selector ``name``: scores, probe convergence and selector-specific details.

    states: L x N x H array or a list of N x H arrays; labels: N integers with at least 2 classes.
    ``params`` override the selector's defaults (``selector_params(name)``).
    """
    selector = _state_selector(name)
    params = selector.with_defaults(params)
    layers, labels = validated(states, labels)
    scores, converged, details = selector.score(layers, labels, **params)
    return LayerScores(name, [float(s) for s in scores], converged, details)


def score_layers(name: str, states: States, labels: Labels, **params) -> list[float]:
    """One float per layer, higher = better. states: L x N x H array or a list of N x H arrays."""
    return score_layers_detailed(name, states, labels, **params).scores


def selection_stability(name: str, states: States, labels: Labels, *, resamples: int = 10, fraction: float = 0.8,
                        seed: int = 0, **params) -> dict:
    """How often each layer wins when selector ``name`` is rerun on random subsets of the samples.

    Redoes the selection on ``resamples`` random subsets (``fraction`` of the rows, without replacement,
    seeded; a subset with one class is skipped). ``seed`` seeds the draws and, for selectors that take a
    ``seed`` parameter, the selector too. Returns {"resamples", "fraction", "seed", "valid_draws",
    "win_rate": one float per layer, summing to 1 when valid_draws > 0, "modal_layer": the layer that won
    most often (lowest index on ties; None when no draw was valid)}.
    """
    selector = _state_selector(name)
    params = selector.with_defaults(params)
    if "seed" in params:
        params["seed"] = seed
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must be in (0, 1]: the share of rows in each resample")
    layers, labels = validated(states, labels)
    rng = np.random.default_rng(seed)
    size = max(2, round(fraction * len(labels)))
    wins = np.zeros(len(layers), dtype=int)
    for _ in range(resamples):
        rows = np.sort(rng.choice(len(labels), size=size, replace=False))
        if np.unique(labels[rows]).size < 2:
            continue  # a one-class subset has nothing to separate
        scores, _, _ = selector.score([x[rows] for x in layers], labels[rows], **params)
        wins[best_layer(scores)] += 1
    draws = int(wins.sum())
    return {"resamples": resamples, "fraction": fraction, "seed": seed, "valid_draws": draws,
            "win_rate": (wins / draws).tolist() if draws else [0.0] * len(layers),
            "modal_layer": int(np.argmax(wins)) if draws else None}
