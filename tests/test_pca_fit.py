"""The fit_pca rule's PCA (pifi.selectors.pc_patching.fit_pcas) fits exactly the configured number of components,
and they are the principal components: checked against an SVD computed here."""

from __future__ import annotations

import numpy as np
import pytest

from pifi.selectors.pc_patching import effects_report, fit_pcas, load_pcas, patching_effect, save_pcas

NUM_LAYERS, N_SAMPLES, HIDDEN = 3, 60, 10


def layers(seed: int = 0) -> np.ndarray:
    """L x N x H states with a clearly decreasing variance per direction (no near-ties between PCs)."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.3, HIDDEN)
    return rng.normal(size=(NUM_LAYERS, N_SAMPLES, HIDDEN)) * scales + rng.normal(size=(NUM_LAYERS, 1, HIDDEN))


def svd_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-k principal directions, scores and explained-variance ratios, from numpy's SVD."""
    centred = x - x.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2
    return vt[:k], centred @ vt[:k].T, variance[:k] / variance.sum()


@pytest.mark.parametrize("n_pcs", [2, 4, 7])
def test_fit_pcas_fits_the_configured_number_of_principal_components(n_pcs):
    states = layers()
    pcas = fit_pcas(states, n_pcs)
    assert len(pcas) == NUM_LAYERS
    for x, pca in zip(states, pcas):
        directions, scores, ratio = svd_pca(x, n_pcs)
        assert pca.components.shape == (n_pcs, HIDDEN) and pca.scores.shape == (N_SAMPLES, n_pcs)
        np.testing.assert_allclose(pca.mean, x.mean(axis=0), atol=1e-10)
        signs = np.sign((pca.components * directions).sum(axis=1))  # a PC's sign is arbitrary
        np.testing.assert_allclose(pca.components * signs[:, None], directions, atol=1e-8)
        np.testing.assert_allclose(pca.scores * signs, scores, atol=1e-8)
        np.testing.assert_allclose(pca.explained_variance_ratio, ratio, atol=1e-10)


def test_the_stored_pcas_give_the_effects_the_configured_n_pcs(tmp_path):
    """What layer_effects records as n_pcs is what the stored PCA holds: the configured value."""
    n_pcs = 5
    states = layers(1).astype(np.float32)
    labels = np.arange(N_SAMPLES) % 2
    save_pcas(tmp_path / "pca.safetensors", fit_pcas(states, n_pcs))
    pcas = load_pcas(tmp_path / "pca.safetensors")
    assert [pca.components.shape[0] for pca in pcas] == [n_pcs] * NUM_LAYERS
    effects = [patching_effect(x, labels, pca, top_pc=2, lambdas=(1.0,)) for x, pca in zip(states, pcas)]
    report = effects_report(effects, dataset="d", slm_type="s", llm_type="l", n_samples=N_SAMPLES,
                            n_pcs=pcas[0].components.shape[0], top_pc=2, seed=0)
    assert report["n_pcs"] == n_pcs
    assert all(len(c) == n_pcs for c in report["pc_label_correlation"])


def test_fit_pcas_takes_a_list_of_layers():
    states = layers(2)
    for a, b in zip(fit_pcas(list(states), 3), fit_pcas(states, 3)):
        np.testing.assert_array_equal(a.components, b.components)
