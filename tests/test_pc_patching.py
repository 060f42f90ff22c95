"""ILM layer selection (PC patching) against a plain re-implementation of docs/design.md's algorithm."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from pifi.selectors import PATCHING, _probes, best_layer, score_layers, selection_margin
from pifi.hidden import load_states, save_states
from pifi.selectors.pc_patching import (
    LayerPCA,
    effects_report,
    fit_layer_pca,
    layer_effects,
    load_pcas,
    patching_effect,
    pc_label_correlations,
    save_pcas,
)


def patching_scores(states, labels, **params):
    """One effect per layer through the registry, as the stability resamples and the leaderboard compute it."""
    return score_layers(PATCHING, states, labels, **params)


N_SAMPLES, HIDDEN, NUM_LAYERS, SIGNAL_LAYER = 200, 24, 4, 2


# --- the reference: docs/design.md "Layer selection", steps 2-6, written out plainly -------------------

def _reference_abs_pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-8 or b.std() < 1e-8:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    return abs(float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum())))


def reference_effects(states, labels, *, n_pcs=16, top_pc=5, lambdas=(0.5, 1.0)) -> list[float]:
    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    effects = []
    for x in states:
        x = np.asarray(x, dtype=np.float64)
        pca = PCA(n_components=n_pcs, random_state=0)
        scores = pca.fit_transform(x)
        components = pca.components_
        if len(classes) > 2:
            targets = [(labels == k).astype(float) for k in classes]
        else:
            targets = [labels.astype(float)]
        corr = [max(_reference_abs_pearson(scores[:, j], t) for t in targets) for j in range(scores.shape[1])]
        top = sorted(range(len(corr)), key=lambda j: -corr[j])[:top_pc]
        removed = scores[:, top] @ components[top]
        probe = LogisticRegression(max_iter=1000).fit(x, labels)
        accuracy = float(np.mean(probe.predict(x) == labels))
        drops = [max(0.0, accuracy - float(np.mean(probe.predict(x - lam * removed) == labels))) for lam in lambdas]
        effects.append(max(drops))
    return effects


def seed_float32_effects(states, labels, *, n_pcs=16, top_pc=5, lambdas=(0.5, 1.0)) -> list[float]:
    """The reference experiment's code: float32 states straight into scikit-learn, no cast (drops counted in rows)."""
    targets = [labels] if len(set(labels.tolist())) == 2 else [labels == k for k in sorted(set(labels.tolist()))]
    effects = []
    for x in states.astype(np.float32):
        pca = PCA(n_components=n_pcs, random_state=0)
        s = pca.fit_transform(x)
        corr = np.array([max(abs(np.corrcoef(s[:, j], t)[0, 1]) for t in targets) for j in range(n_pcs)])
        top = np.argsort(-corr, kind="stable")[:top_pc]
        removed = s[:, top] @ pca.components_[top]
        probe = LogisticRegression(max_iter=1000).fit(x, labels)
        correct = (probe.predict(x) == labels).sum()
        effects.append(max(max(0, correct - (probe.predict(x - lam * removed) == labels).sum()) for lam in lambdas)
                       / len(labels))
    return effects


def make_layers(num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """L x N x H states: layer SIGNAL_LAYER separates the classes, the others are pure noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N_SAMPLES) % num_classes
    rng.shuffle(labels)
    states = rng.normal(size=(NUM_LAYERS, N_SAMPLES, HIDDEN))
    centres = rng.normal(size=(num_classes, HIDDEN)) * 2.0
    states[SIGNAL_LAYER] += centres[labels]
    return states, labels


# --- the registry's PC-patching scores --------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [2, 3])
def test_effects_equal_the_reference_implementation(num_classes):
    states, labels = make_layers(num_classes)
    effects = patching_scores(states, labels)
    expected = reference_effects(states, labels)
    assert len(effects) == NUM_LAYERS
    assert effects == pytest.approx(expected, abs=1e-12)
    # The signal layer carries the label; patching its label PCs away must hurt the probe most.
    assert best_layer(effects) == SIGNAL_LAYER
    assert effects[SIGNAL_LAYER] > 0.3
    assert all(0.0 <= e <= 1.0 for e in effects)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_float32_states_give_exactly_the_seed_float32_effects(num_classes):
    states, labels = make_layers(num_classes, seed=10)
    states = states.astype(np.float32)
    results = layer_effects(states, labels)
    assert [r.effect for r in results] == seed_float32_effects(states, labels)
    assert best_layer([r.effect for r in results]) == SIGNAL_LAYER


def test_float32_states_stay_float32_through_pca_and_probe(monkeypatch):
    """The probe is fitted on float32 states and scores float32 patched states: no float64 cast on the way."""
    states, labels = make_layers(2, seed=11)
    x = states[SIGNAL_LAYER].astype(np.float32)
    pca = fit_layer_pca(x, 8)
    assert pca.scores.dtype == pca.components.dtype == pca.mean.dtype == np.float32
    seen = []

    class RecordingProbe(LogisticRegression):
        def fit(self, X, y, sample_weight=None):
            seen.append(("fit", X.dtype))
            return super().fit(X, y, sample_weight)

        def predict(self, X):
            seen.append(("predict", X.dtype))
            return super().predict(X)

    monkeypatch.setattr(_probes, "LogisticRegression", RecordingProbe)
    patching_effect(x, labels, pca, top_pc=3, lambdas=(0.5, 1.0))
    assert seen == [("fit", np.float32)] + [("predict", np.float32)] * 3


@pytest.mark.parametrize("num_classes", [2, 3])
def test_effects_are_whole_rows(num_classes):
    states, labels = make_layers(num_classes, seed=1)
    for effect in patching_scores(states, labels):
        rows = effect * N_SAMPLES
        assert rows == pytest.approx(round(rows), abs=1e-9)


def test_effects_with_other_settings_match_the_reference():
    states, labels = make_layers(3, seed=2)
    kwargs = dict(n_pcs=6, top_pc=2, lambdas=(0.25, 0.75, 1.5))
    assert patching_scores(states, labels, **kwargs) == pytest.approx(
        reference_effects(states, labels, **kwargs), abs=1e-12)


@pytest.mark.parametrize("lambdas", [(1.5, 0.5), (1.0, 0.0), (-1.0,), (-1.0, 1.0)])
def test_lambda_order_and_the_floor_at_zero_match_the_reference(lambdas):
    """The effect is the max over lambdas whatever their order, and never negative (a negative lambda
    strengthens the label PCs, which can only help the probe)."""
    states, labels = make_layers(2, seed=9)
    effects = patching_scores(states, labels, lambdas=lambdas)
    assert effects == pytest.approx(reference_effects(states, labels, lambdas=lambdas), abs=1e-12)
    assert min(effects) >= 0.0
    if lambdas == (1.0, 0.0):
        assert effects[SIGNAL_LAYER] > 0.3  # from lambda 1.0, although the last lambda removes nothing


def test_effect_is_the_max_over_lambdas_of_the_floored_drop():
    states, labels = make_layers(2, seed=3)
    for result in layer_effects(states, labels):
        assert set(result.patched_accuracy) == {0.5, 1.0}
        drops = [max(0.0, result.base_accuracy - acc) for acc in result.patched_accuracy.values()]
        assert result.effect == pytest.approx(max(drops), abs=1e-12)
        assert len(result.top_pcs) == 5 and len(set(result.top_pcs)) == 5
        # the chosen PCs are those with the largest correlations
        corr = np.asarray(result.pc_label_correlation)
        assert corr[result.top_pcs].min() >= np.delete(corr, result.top_pcs).max()


def test_list_of_arrays_equals_stacked_array():
    states, labels = make_layers(2, seed=4)
    as_list = patching_scores([layer for layer in states], labels.tolist())
    as_array = patching_scores(states, labels)
    assert as_list == as_array


def test_rejects_states_that_are_not_three_dimensional():
    states, labels = make_layers(2)
    with pytest.raises(ValueError, match="L x N x H"):
        patching_scores(states[0], labels)


def test_rejects_layers_with_a_wrong_number_of_rows():
    states, labels = make_layers(2)
    with pytest.raises(ValueError, match="one row per label"):
        patching_scores(states, labels[:-1])


# --- correlations: constant sides give 0, never NaN -----------------------------------------------------

def test_constant_pc_gives_zero_correlation():
    rng = np.random.default_rng(5)
    labels = np.arange(40) % 2
    scores = rng.normal(size=(40, 3))
    scores[:, 1] = 7.0  # a constant PC
    scores[:, 2] += 3 * labels
    corr = pc_label_correlations(scores, labels)
    assert not np.isnan(corr).any()
    assert corr[1] == 0.0
    assert corr[2] > 0.5


def test_three_class_correlation_is_the_one_vs_rest_max():
    rng = np.random.default_rng(6)
    labels = np.arange(60) % 3
    scores = rng.normal(size=(60, 2))
    scores[:, 0] += 4 * (labels == 2)  # only class 2 stands out; Pearson with y itself would be weaker
    corr = pc_label_correlations(scores, labels)
    expected = max(abs(np.corrcoef(scores[:, 0], (labels == k).astype(float))[0, 1]) for k in range(3))
    assert corr[0] == pytest.approx(expected, abs=1e-12)
    assert corr[0] > abs(np.corrcoef(scores[:, 0], labels)[0, 1])


def test_low_rank_layer_has_constant_pcs_and_no_nan():
    """A layer of rank 2 fitted with 4 PCs: PCs 3 and 4 have (numerically) constant scores."""
    rng = np.random.default_rng(7)
    labels = np.arange(50) % 2
    basis = rng.normal(size=(2, HIDDEN))
    low_rank = (rng.normal(size=(50, 2)) + labels[:, None]) @ basis + 5.0
    noise = rng.normal(size=(50, HIDDEN))
    results = layer_effects(np.stack([low_rank, noise]), labels, n_pcs=4, top_pc=2)
    corr = np.asarray(results[0].pc_label_correlation)
    assert not np.isnan(corr).any()
    assert corr[2] == 0.0 and corr[3] == 0.0
    assert sorted(results[0].top_pcs) == [0, 1]
    assert all(np.isfinite(r.effect) for r in results)


# --- choosing the layer ---------------------------------------------------------------------------------

def test_best_layer_takes_the_first_on_ties():
    assert best_layer([0.1, 0.3, 0.3, 0.2]) == 1
    assert best_layer([0.0, 0.0, 0.0]) == 0
    assert best_layer([0.1, 0.2, 0.5]) == 2


def test_selection_margin():
    margin = selection_margin([0.1, 0.5, 0.2, 0.05])
    assert margin["runner_up_layer"] == 2
    assert margin["margin"] == pytest.approx(0.3)
    tie = selection_margin([0.1, 0.3, 0.3])
    assert tie == {"runner_up_layer": 2, "margin": 0.0}
    assert selection_margin([0.4]) == {"runner_up_layer": None, "margin": None}


# --- artifacts and the split (workflow) path ------------------------------------------------------------

def test_save_and_load_pcas_round_trip(tmp_path):
    states, _ = make_layers(2)
    pcas = [fit_layer_pca(layer, 5) for layer in states]
    path = tmp_path / "pca.safetensors"
    save_pcas(path, pcas)
    loaded = load_pcas(path)
    assert len(loaded) == len(pcas)
    for before, after in zip(pcas, loaded):
        assert isinstance(after, LayerPCA)
        for name in ("mean", "components", "scores", "explained_variance_ratio"):
            np.testing.assert_array_equal(getattr(before, name), getattr(after, name))
            assert getattr(after, name).dtype == np.float64
        assert after.components.shape == (5, HIDDEN) and after.scores.shape == (N_SAMPLES, 5)


def test_fit_layer_pca_rejects_more_pcs_than_the_data_allow():
    states, _ = make_layers(2)
    assert fit_layer_pca(states[0][:6], 6).scores.shape == (6, 6)  # exactly min(N, H) is fine
    with pytest.raises(ValueError, match=r"n_pcs=16.*6 samples.*hidden size 24"):
        fit_layer_pca(states[0][:6], 16)
    with pytest.raises(ValueError, match=r"n_pcs=25.*hidden size 24"):
        fit_layer_pca(states[0], 25)


def test_patching_rejects_top_pc_above_the_fitted_pcs():
    states, labels = make_layers(2)
    pca = fit_layer_pca(states[0], 4)
    assert len(patching_effect(states[0], labels, pca, top_pc=4, lambdas=(1.0,)).top_pcs) == 4
    with pytest.raises(ValueError, match=r"top_pc=5.*\(4\)"):
        patching_effect(states[0], labels, pca, top_pc=5, lambdas=(1.0,))
    with pytest.raises(ValueError, match="top_pc=6"):
        patching_scores(states, labels, n_pcs=5, top_pc=6)


# --- probe convergence: recorded per layer, never printed -----------------------------------------------

def test_probe_convergence_is_recorded_and_not_printed(monkeypatch):
    states, labels = make_layers(3, seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any ConvergenceWarning that escapes fails the test
        assert all(r.converged for r in layer_effects(states, labels))
        monkeypatch.setattr(_probes, "PROBE_MAX_ITER", 2)
        capped = layer_effects(states, labels)
    assert not any(r.converged for r in capped)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_split_path_equals_patching_scores(tmp_path, num_classes):
    """extract_hidden -> fit_pca -> layer_effects (through the saved artifacts) == the one-call API."""
    states, labels = make_layers(num_classes, seed=8)
    import torch

    save_states(tmp_path / "states.safetensors", torch.from_numpy(states), labels)
    loaded_states, loaded_labels = load_states(tmp_path / "states.safetensors")  # float32, as in the workflow
    save_pcas(tmp_path / "pca.safetensors", [fit_layer_pca(layer, 16) for layer in loaded_states])
    pcas = load_pcas(tmp_path / "pca.safetensors")
    split = [patching_effect(x, loaded_labels, pca, top_pc=5, lambdas=(0.5, 1.0))
             for x, pca in zip(loaded_states, pcas)]
    direct = layer_effects(loaded_states, loaded_labels)
    assert [e.effect for e in split] == patching_scores(loaded_states, loaded_labels)
    assert [e.top_pcs for e in split] == [e.top_pcs for e in direct]
    assert [e.base_accuracy for e in split] == [e.base_accuracy for e in direct]


SEED_KEYS = ["task", "dataset", "slm_type", "llm_type", "n_samples", "n_pcs", "top_pc", "effects",
             "best_llm_layer", "seed"]


def test_effects_report_starts_with_the_seed_keys_in_order():
    states, labels = make_layers(2)
    effects = layer_effects(states, labels)
    report = effects_report(effects, dataset="sst2", slm_type="bert", llm_type="qwen", n_samples=N_SAMPLES,
                            n_pcs=16, top_pc=5, seed=42, lambdas=[0.5, 1.0], sample_split="train")
    keys = list(report)
    assert keys[:len(SEED_KEYS)] == SEED_KEYS
    assert keys[len(SEED_KEYS):len(SEED_KEYS) + 2] == ["lambdas", "sample_split"]  # extra fields follow
    assert report["task"] == "classification"
    assert report["effects"] == [e.effect for e in effects]
    assert report["best_llm_layer"] == SIGNAL_LAYER
    assert report["seed"] == 42 and report["n_samples"] == N_SAMPLES
    assert report["num_layers"] == NUM_LAYERS
    assert report["probe_accuracy"] == [e.base_accuracy for e in effects]
    assert report["runner_up_layer"] == selection_margin(report["effects"])["runner_up_layer"]
    assert report["probe_converged"] == [e.converged for e in effects] == [True] * NUM_LAYERS
    assert report["selector"] == "ilm_pc_patching"
    assert report["scores"] == report["effects"]
    json.dumps(report)  # the report must be plain JSON
