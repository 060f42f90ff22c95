"""ILM layer selection by layer-level PC patching (the seed experiment's algorithm).

For each decoder layer l with pooled states X_l (N x H) and labels y:
1. PCA with ``n_pcs`` components (random_state=0): scores S (N x k), components U (k x H).
2. c_j = |Pearson(S_j, y)| per PC; with more than two classes the max over classes k of
   |Pearson(S_j, 1[y=k])|; 0 where either side is constant (std < 1e-8).
3. top = the ``top_pc`` PCs with the largest c_j; R = S[:, top] @ U[top].
4. For each lambda: X_cf = X_l - lambda * R. A LogisticRegression(max_iter=1000) fitted on
   (X_l, y) scores both X_l and X_cf on the same N rows; the effect is the accuracy drop,
   floored at 0.
5. effect_l = max over lambdas; the best layer is the argmax (the first on ties).

Accuracies are counted in whole rows, so every effect is an exact multiple of 1/N.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

STD_EPS = 1e-8
PCA_RANDOM_STATE = 0


@dataclass(frozen=True)
class LayerPCA:
    mean: np.ndarray        # H
    components: np.ndarray  # k x H
    scores: np.ndarray      # N x k
    explained_variance_ratio: np.ndarray  # k


@dataclass(frozen=True)
class LayerEffect:
    effect: float                   # max over lambdas of the accuracy drop
    base_accuracy: float            # the probe's accuracy on the unpatched states
    patched_accuracy: dict[float, float]
    top_pcs: list[int]
    pc_label_correlation: list[float] = field(default_factory=list)


def fit_layer_pca(states: np.ndarray, n_pcs: int) -> LayerPCA:
    """Fit the PCA of one layer's pooled states (N x H)."""
    states = np.asarray(states, dtype=np.float64)
    n_pcs = min(n_pcs, *states.shape)
    pca = PCA(n_components=n_pcs, random_state=PCA_RANDOM_STATE)
    scores = pca.fit_transform(states)
    return LayerPCA(pca.mean_, pca.components_, scores, pca.explained_variance_ratio_)


def _abs_pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < STD_EPS or b.std() < STD_EPS:
        return 0.0
    return float(abs(np.corrcoef(a, b)[0, 1]))


def pc_label_correlations(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """|Pearson| between each PC's scores and the labels (one-vs-rest max with > 2 classes)."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    targets = [labels.astype(np.float64)] if len(classes) <= 2 else [
        (labels == k).astype(np.float64) for k in classes]
    return np.array([max(_abs_pearson(scores[:, j], t) for t in targets) for j in range(scores.shape[1])])


def patching_effect(
    states: np.ndarray, labels: np.ndarray, pca: LayerPCA, *, top_pc: int, lambdas: Sequence[float]
) -> LayerEffect:
    """The accuracy drop of a linear probe when the layer's most label-correlated PCs are removed."""
    states = np.asarray(states, dtype=np.float64)
    labels = np.asarray(labels)
    correlation = pc_label_correlations(pca.scores, labels)
    # Stable sort on -c keeps the lower PC index first on ties.
    top = np.argsort(-correlation, kind="stable")[:top_pc]
    removed = pca.scores[:, top] @ pca.components[top]
    probe = LogisticRegression(max_iter=1000).fit(states, labels)
    n = len(labels)
    base_correct = int((probe.predict(states) == labels).sum())
    patched, best_drop = {}, 0
    for lam in lambdas:
        correct = int((probe.predict(states - lam * removed) == labels).sum())
        patched[float(lam)] = correct / n
        best_drop = max(best_drop, base_correct - correct)
    return LayerEffect(best_drop / n, base_correct / n, patched, [int(j) for j in top], correlation.tolist())


def _as_layers(states: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(states, np.ndarray):
        if states.ndim != 3:
            raise ValueError(f"states must be L x N x H, got shape {states.shape}")
        return list(states)
    return [np.asarray(layer) for layer in states]


def layer_effects(
    states: np.ndarray | Sequence[np.ndarray], labels: np.ndarray | Sequence[int], *,
    n_pcs: int = 16, top_pc: int = 5, lambdas: Sequence[float] = (0.5, 1.0),
) -> list[LayerEffect]:
    """The full per-layer result (effect, probe accuracies, chosen PCs) for every layer."""
    labels = np.asarray(labels)
    layers = _as_layers(states)
    if any(len(layer) != len(labels) for layer in layers):
        raise ValueError(f"every layer needs one row per label ({len(labels)} labels)")
    return [patching_effect(layer, labels, fit_layer_pca(layer, n_pcs), top_pc=top_pc, lambdas=lambdas)
            for layer in layers]


def pc_patching_effects(
    states: np.ndarray | Sequence[np.ndarray], labels: np.ndarray | Sequence[int], *,
    n_pcs: int = 16, top_pc: int = 5, lambdas: Sequence[float] = (0.5, 1.0),
) -> list[float]:
    """One PC-patching effect per decoder layer, from L x N x H pooled states and integer labels."""
    return [e.effect for e in layer_effects(states, labels, n_pcs=n_pcs, top_pc=top_pc, lambdas=lambdas)]


def best_layer(effects: Sequence[float]) -> int:
    """The layer with the largest effect, the first on ties."""
    return int(np.argmax(np.asarray(effects)))


def selection_margin(effects: Sequence[float]) -> dict[str, float | int | None]:
    """How clearly the best layer wins: the runner-up and the gap to it."""
    effects = np.asarray(effects, dtype=np.float64)
    best = best_layer(effects)
    if len(effects) < 2:
        return {"runner_up_layer": None, "margin": None}
    rest = effects.copy()
    rest[best] = -np.inf
    runner_up = int(np.argmax(rest))
    return {"runner_up_layer": runner_up, "margin": float(effects[best] - effects[runner_up])}


def save_pcas(path, pcas: Sequence[LayerPCA]) -> None:
    """One safetensors file, tensors ``layer.{l}.{mean,components,scores,explained_variance_ratio}``."""
    import torch

    from pifi.artifacts import write_safetensors

    tensors = {}
    for layer, pca in enumerate(pcas):
        for name in ("mean", "components", "scores", "explained_variance_ratio"):
            tensors[f"layer.{layer}.{name}"] = torch.from_numpy(np.ascontiguousarray(getattr(pca, name)))
    write_safetensors(path, tensors, {"num_layers": str(len(pcas))})


def load_pcas(path) -> list[LayerPCA]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        num_layers = int(handle.metadata()["num_layers"])
        return [LayerPCA(*(handle.get_tensor(f"layer.{layer}.{name}")
                           for name in ("mean", "components", "scores", "explained_variance_ratio")))
                for layer in range(num_layers)]


def effects_report(effects: Sequence[LayerEffect], **fields) -> dict:
    """The per-layer effect file: the seed experiment's keys first, then the details behind them."""
    values = [e.effect for e in effects]
    report = {
        "task": "classification",
        "dataset": fields.pop("dataset"),
        "slm_type": fields.pop("slm_type"),
        "llm_type": fields.pop("llm_type"),
        "n_samples": fields.pop("n_samples"),
        "n_pcs": fields.pop("n_pcs"),
        "top_pc": fields.pop("top_pc"),
        "effects": values,
        "best_llm_layer": best_layer(values),
        "seed": fields.pop("seed"),
    }
    report.update(fields)
    report.update({
        **selection_margin(values),
        "num_layers": len(values),
        "probe_accuracy": [e.base_accuracy for e in effects],
        "patched_accuracy": [{str(k): v for k, v in e.patched_accuracy.items()} for e in effects],
        "top_pcs": [e.top_pcs for e in effects],
        "pc_label_correlation": [e.pc_label_correlation for e in effects],
        # transformers returns the last layer's state after the final norm: not on the others' scale.
        "last_layer_post_norm": True,
    })
    return report


SELECTOR = "ilm_pc_patching"


def select_from_report(report: dict) -> dict:
    """The selection file: which layer, chosen how, and how clearly it won."""
    effects = report["effects"]
    layer = best_layer(effects)
    return {
        "dataset": report["dataset"], "slm": report["slm_type"], "llm": report["llm_type"],
        "selector": SELECTOR, "layer": layer, "effect": effects[layer],
        **selection_margin(effects),
        "last_layer_effect": effects[-1], "num_layers": len(effects),
        # Share of resampled selections this layer won (None when stability was not measured).
        "win_rate": report["stability"]["win_rate"][layer] if "stability" in report else None,
    }


def selection_stability(
    states: np.ndarray | Sequence[np.ndarray], labels: np.ndarray | Sequence[int], *,
    n_pcs: int = 16, top_pc: int = 5, lambdas: Sequence[float] = (0.5, 1.0),
    resamples: int = 10, fraction: float = 0.8, seed: int = 0,
) -> dict:
    """How often each layer wins when the selection is redone on random subsets of the samples.

    The winning layer often beats the runner-up by a few rows; a layer that wins on most subsets
    is a choice, one that wins on few is a coin toss. Returns per-layer win rates over
    ``resamples`` draws of ``fraction`` of the rows (without replacement, seeded).
    """
    layers = _as_layers(states)
    labels = np.asarray(labels)
    wins = np.zeros(len(layers), dtype=int)
    rng = np.random.default_rng(seed)
    size = max(2, int(round(fraction * len(labels))))
    for _ in range(resamples):
        rows = np.sort(rng.choice(len(labels), size=size, replace=False))
        if len(np.unique(labels[rows])) < 2:
            continue  # a one-class subset cannot train the probe
        effects = pc_patching_effects([layer[rows] for layer in layers], labels[rows],
                                      n_pcs=n_pcs, top_pc=top_pc, lambdas=lambdas)
        wins[best_layer(effects)] += 1
    draws = int(wins.sum())
    return {"resamples": resamples, "fraction": fraction, "seed": seed, "valid_draws": draws,
            "win_rate": (wins / draws).tolist() if draws else [0.0] * len(layers)}
