"""plugin_probe: the layer as PiFi uses it, PiFi's plug-in and head trained on the frozen SLM's CLS vectors
through each frozen LLM layer, scored by held-out accuracy over folds x initialisations.

It reads CLS vectors and the LLM's weights, not pooled states: its own rules (cls_features, plugin_probe),
no stability resamples (each would retrain every layer). The training itself is ``pifi.plugin_probe``
(torch, imported only when a layer is scored).

plugin_probe_finetuned is the same probe on the CLS vectors of the fine-tuned ``base`` run of the lowest
seed (``features: finetuned``; rule cls_features_finetuned): the SLM as PiFi's head will see it after
training rather than before. Opt-in, as it waits for (and, without ``base`` among the methods, adds) that
training run. With selection.split train, the selection rows are rows that run trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pifi.selectors._declaration import PLUGGED, Selector, check_folds


FEATURES = ("pretrained", "finetuned")  # the CLS vectors' SLM: as downloaded, or after the base run's training


@dataclass(frozen=True)
class PluginProbeParams:
    """How each layer's plug-in is trained: the training recipe's Adam, learning rate, batch size, label
    smoothing, dropout and clipping; folds, initialisations and epochs are the probe's own."""

    folds: int = 4                 # stratified k-fold over the selection rows: 4 x 100 held-out rows of 400
    inits: int = 2                 # initialisations per fold; the score is the mean over folds x inits
    epochs: int = 5                # ~50 steps per model on 300 rows; on SST-2 a rate of 1e-3 instead of the
                                   # recipe's overfit (held-out loss above ln 2) without a clearer ranking
    batch_size: int = 32           # the recipe's
    learning_rate: float = 5e-5    # the recipe's
    label_smoothing: float = 0.05  # the recipe's
    dropout: float = 0.2           # the recipe's
    grad_clip: float = 5.0         # the recipe's
    seed: int = 0
    score: str = "accuracy"        # accuracy: mean held-out accuracy; loss: minus the mean held-out loss (smoother)
    features: str = "pretrained"   # whose CLS vectors: the pretrained SLM's, or the fine-tuned base run's

    def check(self, labels: np.ndarray) -> None:
        if self.score not in ("accuracy", "loss"):
            raise ValueError(f"plugin_probe: score={self.score!r} must be 'accuracy' or 'loss'")
        if self.features not in FEATURES:
            raise ValueError(f"plugin_probe: features={self.features!r} must be one of {', '.join(FEATURES)}")
        check_folds("plugin_probe", labels, self.folds)
        for name in ("inits", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"plugin_probe: {name}={getattr(self, name)} must be at least 1")


# How a call is run, not what is scored: passed to the training as they are.
_RUN_OPTIONS = ("layers", "device", "trust_remote_code", "progress", "details")


def _score(vectors, labels, llm_path, **kwargs: Any) -> list[float]:
    """Scores per layer; ``kwargs``: PluginProbeParams fields (an unknown one is a TypeError) and run options.
    ``vectors``: the CLS vectors the rules chose by the ``features`` setting."""
    from pifi.plugin_probe import score_plugged_layers  # torch: only when a layer is scored

    options = {key: kwargs.pop(key) for key in _RUN_OPTIONS if key in kwargs}
    return score_plugged_layers(vectors, labels, llm_path, PluginProbeParams(**kwargs), **options)


def reads_finetuned(params: dict[str, Any]) -> bool:
    """Whether a plugged selector with these settings reads the fine-tuned base run's CLS vectors."""
    return params.get("features") == "finetuned"


FINETUNED_SUFFIX = ".finetuned"  # results/features/{dataset}/{slm}/cls.finetuned.safetensors and its benchmark


def features_suffix(params: dict[str, Any]) -> str:
    """The suffix of the CLS vectors' files these settings read: "" (pretrained) or ``FINETUNED_SUFFIX``."""
    return FINETUNED_SUFFIX if reads_finetuned(params) else ""


def _check(params: dict[str, Any], labels: np.ndarray) -> None:
    PluginProbeParams(**params).check(labels)


SELECTORS = (
    Selector("plugin_probe", PLUGGED, _score, asdict(PluginProbeParams()),
             "PiFi's plug-in and head trained through the frozen layer on the SLM's CLS vectors",
             resampled=False, check=_check),
    Selector("plugin_probe_finetuned", PLUGGED, _score, asdict(PluginProbeParams(features="finetuned")),
             "plugin_probe on the CLS vectors of the fine-tuned base run of the lowest seed",
             resampled=False, check=_check, by_default=False),
)
