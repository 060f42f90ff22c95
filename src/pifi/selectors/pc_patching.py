"""ilm_pc_patching: layer-level PC patching, the ILM reference experiment's algorithm (the default selector).

For each decoder layer l with pooled states X_l (N x H) and labels y:
1. PCA with ``n_pcs`` components (random_state=0): scores S (N x k), components U (k x H).
2. c_j = |Pearson(S_j, y)| per PC; with more than two classes the max over classes k of
   |Pearson(S_j, 1[y=k])|; 0 where either side is constant (std < 1e-8).
3. top = the ``top_pc`` PCs with the largest c_j; R = S[:, top] @ U[top].
4. For each lambda: X_cf = X_l - lambda * R. A LogisticRegression(max_iter=1000) fitted on
   (X_l, y) scores both X_l and X_cf on the same N rows; the effect is the accuracy drop,
   floored at 0.
5. effect_l = max over lambdas; the best layer is the argmax (the first on ties).

Everything runs in the states' own arithmetic (float32 for pooled hidden states, as in the reference
experiment's code): scikit-learn's PCA and LogisticRegression keep float32 input in float32. Only the Pearson
correlations use float64 internally. Accuracies are counted in whole rows, so every effect is an
exact multiple of 1/N.

Whether each layer's probe converged is recorded (``LayerEffect.converged``) instead of printing
scikit-learn's ConvergenceWarning once per fit.

The rules fit the PCA once per layer (fit_pca) and pass it to ``layer_effects``; the registry's score (stability
resamples, the leaderboard) fits it on the rows it is given: one implementation, one PCA per layer and draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from pifi.selectors._declaration import STATES, Result, Selector, best_layer, selection_margin
from pifi.selectors._probes import ConvergenceWatch, logistic_probe

STD_EPS = 1e-8
PCA_RANDOM_STATE = 0
# The reference experiment's settings: 16 PCs per layer, the 5 most label-correlated patched out, at two strengths.
DEFAULTS = {"n_pcs": 16, "top_pc": 5, "lambdas": (0.5, 1.0)}


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
    pc_label_correlation: list[float]
    converged: bool                 # did the probe's solver converge within PROBE_MAX_ITER


def fit_layer_pca(states: np.ndarray, n_pcs: int) -> LayerPCA:
    """Fit the PCA of one layer's pooled states (N x H), in their own dtype (float32 stays float32)."""
    states = np.asarray(states)
    if n_pcs > min(states.shape):
        raise ValueError(
            f"n_pcs={n_pcs} is more than the layer's states allow: {states.shape[0]} samples x hidden size "
            f"{states.shape[1]} give at most {min(states.shape)} PCs; lower n_pcs or use more samples")
    pca = PCA(n_components=n_pcs, random_state=PCA_RANDOM_STATE)
    scores = pca.fit_transform(states)
    return LayerPCA(pca.mean_, pca.components_, scores, pca.explained_variance_ratio_)


def fit_pcas(states: np.ndarray | Sequence[np.ndarray], n_pcs: int) -> list[LayerPCA]:
    """One PCA of ``n_pcs`` components per layer (L x N x H, or a list of N x H arrays).

    What the fit_pca rule stores: the layer effects read their ``n_pcs`` from it, so a fit with
    fewer components than configured would show in ``effects.json`` too.
    """
    return [fit_layer_pca(layer, n_pcs) for layer in _as_layers(states)]


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
    """The accuracy drop of a linear probe when the layer's most label-correlated PCs are removed.

    Computed in the states' own dtype (float32 states: float32 patching and probe).
    """
    states = np.asarray(states)
    labels = np.asarray(labels)
    n_pcs = pca.scores.shape[1]
    if not 1 <= top_pc <= n_pcs:
        raise ValueError(f"top_pc={top_pc} must be between 1 and the number of PCs fitted ({n_pcs}); "
                         f"lower top_pc or fit more PCs (n_pcs)")
    correlation = pc_label_correlations(pca.scores, labels)
    # Stable sort on -c keeps the lower PC index first on ties.
    top = np.argsort(-correlation, kind="stable")[:top_pc]
    removed = pca.scores[:, top] @ pca.components[top]
    with ConvergenceWatch() as watch:
        probe = logistic_probe().fit(states, labels)
    n = len(labels)
    base_correct = int((probe.predict(states) == labels).sum())
    patched, best_drop = {}, 0
    for lam in map(float, lambdas):  # a Python float keeps float32 states float32 (NumPy 2 promotion)
        correct = int((probe.predict(states - lam * removed) == labels).sum())
        patched[lam] = correct / n
        best_drop = max(best_drop, base_correct - correct)
    return LayerEffect(best_drop / n, base_correct / n, patched, [int(j) for j in top], correlation.tolist(),
                       watch.converged)


def _as_layers(states: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(states, np.ndarray):
        if states.ndim != 3:
            raise ValueError(f"states must be L x N x H, got shape {states.shape}")
        return list(states)
    return [np.asarray(layer) for layer in states]


def layer_effects(
    states: np.ndarray | Sequence[np.ndarray], labels: np.ndarray | Sequence[int], *,
    n_pcs: int = DEFAULTS["n_pcs"], top_pc: int = DEFAULTS["top_pc"], lambdas: Sequence[float] = DEFAULTS["lambdas"],
    pcas: Sequence[LayerPCA] | None = None,
) -> list[LayerEffect]:
    """The full per-layer result (effect, probe accuracies, chosen PCs) for every layer.

    ``pcas``: each layer's PCA as fit_pca stored it (then ``n_pcs`` is theirs); else fitted here with ``n_pcs``.
    """
    labels = np.asarray(labels)
    layers = _as_layers(states)
    if any(len(layer) != len(labels) for layer in layers):
        raise ValueError(f"every layer needs one row per label ({len(labels)} labels)")
    if pcas is None:
        pcas = [fit_layer_pca(layer, n_pcs) for layer in layers]
    elif len(pcas) != len(layers):
        raise ValueError(f"{len(pcas)} PCAs for {len(layers)} layers: the PCA file is not these states'")
    return [patching_effect(layer, labels, pca, top_pc=top_pc, lambdas=lambdas) for layer, pca in zip(layers, pcas)]


def _score(layers: list[np.ndarray], labels: np.ndarray, *, n_pcs: int, top_pc: int,
           lambdas: Sequence[float]) -> Result:
    effects = layer_effects(layers, labels, n_pcs=n_pcs, top_pc=top_pc, lambdas=lambdas)
    details = {"probe_accuracy": [e.base_accuracy for e in effects], "top_pcs": [e.top_pcs for e in effects]}
    return [e.effect for e in effects], [e.converged for e in effects], details


SELECTOR = Selector("ilm_pc_patching", STATES, _score, DEFAULTS,
                    "the ILM reference experiment's PC patching: the probe's accuracy drop without the top PCs")


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
    """Read what ``save_pcas`` wrote, checksum verified."""
    from pifi.artifacts import read_safetensors

    tensors, metadata = read_safetensors(path, framework="np")
    return [LayerPCA(*(tensors[f"layer.{layer}.{name}"]
                       for name in ("mean", "components", "scores", "explained_variance_ratio")))
            for layer in range(int(metadata["num_layers"]))]


def effects_report(effects: Sequence[LayerEffect], **fields) -> dict:
    """The per-layer effect file: the reference experiment's keys first, then the details behind them."""
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
        "probe_converged": [e.converged for e in effects],
        # transformers returns the last layer's state after the final norm: not on the others' scale.
        "last_layer_post_norm": True,
        # The keys every selector's score file shares (see pifi.selectors).
        "selector": SELECTOR.name,
        "scores": values,
    })
    return report
