"""Layer selectors against hand-computed values and independent scikit-learn / numpy computations."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pifi import selectors
from pifi.selectors import _probes, logme
from pifi.selectors import (
    SELECTORS,
    STATE_SELECTORS,
    LayerScores,
    best_layer,
    score_layers,
    score_layers_detailed,
    selection_stability,
    selector_params,
)
from pifi.selectors.pc_patching import layer_effects

NUM_LAYERS, N_SAMPLES, HIDDEN = 4, 96, 20
STRONG_LAYER, WEAK_LAYER = 2, 1
INFORMATIVE = ["ilm_pc_patching", "probe_cv", "fisher", "silhouette", "mdl", "logme", "ilm_v2"]


def make_layers(num_classes: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """L x N x H float32 states: layer 2 separates the classes clearly, layer 1 weakly, 0 and 3 are noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N_SAMPLES) % num_classes
    rng.shuffle(labels)
    states = rng.normal(size=(NUM_LAYERS, N_SAMPLES, HIDDEN))
    centres = rng.normal(size=(num_classes, HIDDEN))
    states[STRONG_LAYER] += 3.0 * centres[labels]
    states[WEAK_LAYER] += 0.5 * centres[labels]
    return states.astype(np.float32), labels


# --- every selector -------------------------------------------------------------------------------------

def test_every_shipped_selector_is_declared_once_the_default_first():
    assert SELECTORS == ("ilm_pc_patching", "first", "fisher", "ilm_v2", "last", "logme", "mdl", "middle",
                         "plugin_probe", "probe_cv", "silhouette")
    assert STATE_SELECTORS == tuple(name for name in SELECTORS if name != "plugin_probe")


def test_plugin_probe_is_not_scored_from_pooled_states():
    states, labels = make_layers()
    with pytest.raises(ValueError, match="score_plugged_layers"):
        score_layers("plugin_probe", states, labels)
    assert selector_params("plugin_probe")["folds"] == 4


@pytest.mark.parametrize("name", STATE_SELECTORS)
def test_every_selector_gives_one_float_per_layer(name):
    states, labels = make_layers()
    result = score_layers_detailed(name, states, labels)
    assert isinstance(result, LayerScores) and result.selector == name
    assert len(result.scores) == NUM_LAYERS
    assert all(type(s) is float and math.isfinite(s) for s in result.scores)
    assert result.converged is None or result.converged == [True] * NUM_LAYERS
    json.dumps(result.details)  # details go into the score file as they are
    assert score_layers(name, states, labels) == result.scores


@pytest.mark.parametrize("name", INFORMATIVE)
@pytest.mark.parametrize("num_classes", [2, 3])
def test_informative_selectors_prefer_the_layer_that_separates_the_classes(name, num_classes):
    states, labels = make_layers(num_classes, seed=1)
    scores = score_layers(name, states, labels)
    noise = max(scores[0], scores[3])
    assert scores[STRONG_LAYER] > noise and scores[WEAK_LAYER] > noise
    # PC patching measures an accuracy drop, which saturates (a weak layer can tie or beat a strong one);
    # the other selectors grade the strength of the signal.
    if name != "ilm_pc_patching":
        assert best_layer(scores) == STRONG_LAYER


def test_list_of_layers_equals_the_stacked_array():
    states, labels = make_layers(seed=2)
    for name in ("probe_cv", "fisher", "mdl"):
        assert score_layers(name, list(states), labels.tolist()) == score_layers(name, states, labels)


# --- ilm_pc_patching ------------------------------------------------------------------------------------

def test_ilm_pc_patching_is_the_seed_score(monkeypatch):
    states, labels = make_layers(3, seed=3)
    kwargs = dict(n_pcs=6, top_pc=2, lambdas=(0.25, 1.0))
    result = score_layers_detailed("ilm_pc_patching", states, labels, **kwargs)
    assert result.scores == [e.effect for e in layer_effects(states, labels, **kwargs)]
    assert score_layers("ilm_pc_patching", states, labels) == [e.effect for e in layer_effects(states, labels)]
    assert result.converged == [True] * NUM_LAYERS
    monkeypatch.setattr(_probes, "PROBE_MAX_ITER", 2)
    assert score_layers_detailed("ilm_pc_patching", states, labels, **kwargs).converged == [False] * NUM_LAYERS


# --- probe_cv -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("folds, seed", [(5, 0), (3, 7)])
def test_probe_cv_is_sklearns_cross_val_score(folds, seed):
    states, labels = make_layers(3, seed=4)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    expected = [cross_val_score(probe, x, labels, cv=cv, scoring="accuracy").mean() for x in states]
    assert score_layers("probe_cv", states, labels, folds=folds, seed=seed) == pytest.approx(expected, abs=1e-15)


def test_probe_cv_rejects_folds_the_classes_cannot_fill():
    states, labels = make_layers(seed=5)
    labels = labels.copy()
    labels[labels == 1] = 0
    labels[:3] = 1  # the smallest class holds 3 rows
    assert len(score_layers("probe_cv", states, labels, folds=3)) == NUM_LAYERS
    with pytest.raises(ValueError, match=r"folds=4.*smallest class count \(3\)"):
        score_layers("probe_cv", states, labels, folds=4)
    with pytest.raises(ValueError, match="folds=1"):
        score_layers("probe_cv", states, labels, folds=1)


def test_probe_convergence_is_recorded_and_never_printed(monkeypatch):
    states, labels = make_layers(3, seed=6)
    monkeypatch.setattr(_probes, "PROBE_MAX_ITER", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ConvergenceWarning that escapes fails the test
        for name in ("probe_cv", "mdl"):
            assert score_layers_detailed(name, states, labels).converged == [False] * NUM_LAYERS


# --- fisher ---------------------------------------------------------------------------------------------

def hand_fisher_1d(values: np.ndarray, labels: np.ndarray) -> float:
    """sum_k n_k (m_k - m)^2 / sum_k sum_i (x_i - m_k)^2 from the raw values (z-scoring cancels in 1-D)."""
    mean = values.mean()
    between = sum((labels == k).sum() * (values[labels == k].mean() - mean) ** 2 for k in (0, 1))
    within = sum(((values[labels == k] - values[labels == k].mean()) ** 2).sum() for k in (0, 1))
    return between / within


def test_fisher_equals_the_hand_computed_ratio_of_two_gaussian_classes():
    rng = np.random.default_rng(7)
    labels = np.repeat([0, 1], [30, 50])
    noise = rng.normal(size=80)
    ratios = []
    for separation in (0.5, 2.0, 4.0):
        values = noise + separation * labels
        layer = np.stack([values, np.full(80, 3.0)], axis=1)  # a constant feature, which must be dropped
        expected = hand_fisher_1d(values, labels)
        result = score_layers_detailed("fisher", layer[None], labels)
        assert result.scores[0] == pytest.approx(expected, rel=1e-12)
        assert result.details["features_used"] == [1]
        ratios.append(result.scores[0])
    assert ratios[0] < ratios[1] < ratios[2]


def test_fisher_on_isotropic_classes_and_its_invariance_to_feature_scale():
    rng = np.random.default_rng(8)
    labels = np.arange(120) % 2
    x = rng.normal(size=(120, 5)) + 1.5 * labels[:, None]
    z = (x - x.mean(0)) / x.std(0)
    means = [z[labels == k].mean(0) for k in (0, 1)]
    between = sum(60 * m @ m for m in means)
    within = sum(((z[labels == k] - means[k]) ** 2).sum() for k in (0, 1))
    scaled = x * np.array([1.0, 10.0, 0.1, 3.0, 1e3]) - 7.0
    scores = score_layers("fisher", [x, scaled], labels)
    assert scores == pytest.approx([between / within] * 2, rel=1e-9)
    # z-scored features have total scatter N * H, so J = B / (N * H - B)
    assert scores[0] == pytest.approx(between / (120 * 5 - between), rel=1e-9)


# --- silhouette -----------------------------------------------------------------------------------------

def numpy_silhouette(x: np.ndarray, labels: np.ndarray, n_components: int) -> float:
    """Standardize, project on the top principal axes (SVD), mean of (b - a) / max(a, b) over rows."""
    z = (x - x.mean(0)) / x.std(0)
    z = z - z.mean(0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    reduced = z @ vt[:n_components].T
    distance = cdist(reduced, reduced)
    values = []
    for i, label in enumerate(labels):
        same = labels == label
        a = distance[i, same].sum() / (same.sum() - 1)
        b = min(distance[i, labels == k].mean() for k in np.unique(labels) if k != label)
        values.append((b - a) / max(a, b))
    return float(np.mean(values))


@pytest.mark.parametrize("num_classes, n_components", [(2, 4), (3, 6)])
def test_silhouette_equals_an_independent_numpy_computation(num_classes, n_components):
    states, labels = make_layers(num_classes, seed=9)
    states = states.astype(np.float64)
    expected = [numpy_silhouette(x, labels, n_components) for x in states]
    assert score_layers("silhouette", states, labels, n_components=n_components) == pytest.approx(expected, abs=1e-9)


def test_silhouette_rejects_more_components_than_the_states_have():
    states, labels = make_layers(seed=10)
    with pytest.raises(ValueError, match=rf"n_components=21.*min\(N, H\) = {HIDDEN}"):
        score_layers("silhouette", states, labels, n_components=21)


# --- mdl ------------------------------------------------------------------------------------------------

def test_mdl_code_is_short_for_separated_classes_and_near_uniform_for_noise():
    rng = np.random.default_rng(11)
    labels = np.arange(200) % 2
    noise = rng.normal(size=(200, 10))
    separated = rng.normal(size=(200, 10)) + 8.0 * labels[:, None]
    result = score_layers_detailed("mdl", [separated, noise], labels)
    uniform = result.details["uniform_code_length_bits"]
    assert uniform == 200.0  # 200 rows, 1 bit each for 2 classes
    separated_bits, noise_bits = result.details["code_length_bits"]
    assert result.scores == [-separated_bits, -noise_bits]
    assert separated_bits < 0.2 * uniform
    assert noise_bits > 0.9 * uniform
    assert result.details["compression"] == pytest.approx([uniform / separated_bits, uniform / noise_bits])
    assert result.details["block_ends"] == [10, 20, 40, 80, 160, 200]


@pytest.mark.parametrize("num_classes", [2, 3])
def test_mdl_by_hand_when_the_first_block_holds_one_row(num_classes):
    """Block 1: one row in the uniform code (log2 C bits). Block 2: its training rows hold one class, so each
    row costs -log2 of the Laplace frequency: (1+1)/(1+C) for that class, 1/(1+C) for the others."""
    per_class = 10
    labels = np.repeat(np.arange(num_classes), per_class)
    states = np.random.default_rng(12).normal(size=(1, len(labels), 4))
    n = len(labels)
    bits = score_layers_detailed("mdl", states, labels, fractions=(1 / n, 1.0)).details["code_length_bits"][0]
    expected = (math.log2(num_classes) + (per_class - 1) * -math.log2(2 / (1 + num_classes))
                + (n - per_class) * -math.log2(1 / (1 + num_classes)))
    assert bits == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_mdl_by_hand_when_the_features_say_nothing(num_classes):
    """Constant features: the probe learns only the class frequencies of its training rows. With balanced
    classes spread evenly over the order, the first half holds every class equally, so every row of the
    second block costs log2 C bits, as in the uniform first block: the code length is N log2 C."""
    labels = np.repeat(np.arange(num_classes), 10)
    states = np.zeros((1, len(labels), 3), dtype=np.float32)
    result = score_layers_detailed("mdl", states, labels, fractions=(0.5, 1.0))
    assert result.details["code_length_bits"][0] == pytest.approx(len(labels) * math.log2(num_classes), rel=1e-6)
    assert result.details["compression"][0] == pytest.approx(1.0, rel=1e-6)
    assert result.converged == [True]


@pytest.mark.parametrize("fractions", [(0.5, 0.9), (0.5, 0.25, 1.0), (0.001, 1.0), (0.5, 0.501, 1.0)])
def test_mdl_rejects_a_bad_block_schedule(fractions):
    states, labels = make_layers(seed=13)
    with pytest.raises(ValueError, match="fractions="):
        score_layers("mdl", states, labels, fractions=fractions)


# --- baselines ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_layers, middle", [(4, 2), (5, 2), (1, 0)])
def test_first_last_and_middle_baselines(num_layers, middle):
    states = np.zeros((num_layers, 6, 2))
    labels = np.array([0, 1] * 3)
    assert best_layer(score_layers("first", states, labels)) == 0
    assert score_layers("first", states, labels) == [-float(layer) for layer in range(num_layers)]
    assert score_layers("last", states, labels) == [float(layer) for layer in range(num_layers)]
    assert best_layer(score_layers("last", states, labels)) == num_layers - 1
    scores = score_layers("middle", states, labels)
    assert best_layer(scores) == middle
    assert scores == [-abs(layer - middle) for layer in range(num_layers)]


# --- stability ------------------------------------------------------------------------------------------

def test_stability_of_a_clear_winner():
    states, labels = make_layers(seed=14)
    result = selection_stability("fisher", states, labels, resamples=5, fraction=0.7, seed=3)
    assert result == {"resamples": 5, "fraction": 0.7, "seed": 3, "valid_draws": 5,
                      "win_rate": [0.0, 0.0, 1.0, 0.0], "modal_layer": STRONG_LAYER}
    assert selection_stability("fisher", states, labels, resamples=5, fraction=0.7, seed=3) == result


def test_stability_win_rates_count_the_winners_of_each_subset():
    """Layers 1 and 2 carry the same signal with independent noise, so the winner changes from subset to
    subset; the win rates must be the shares of an independent recount."""
    rng = np.random.default_rng(15)
    labels = np.arange(60) % 2
    states = rng.normal(size=(3, 60, 4))
    states[1:] += 0.8 * labels[:, None]
    result = selection_stability("fisher", states, labels, resamples=12, fraction=0.5, seed=4)
    draw = np.random.default_rng(4)
    wins = np.zeros(3)
    for _ in range(12):
        rows = np.sort(draw.choice(60, size=30, replace=False))
        wins[best_layer(score_layers("fisher", states[:, rows], labels[rows]))] += 1
    assert result["valid_draws"] == 12
    assert result["win_rate"] == pytest.approx((wins / 12).tolist())
    assert sum(result["win_rate"]) == pytest.approx(1.0)
    assert result["modal_layer"] == int(np.argmax(wins))
    assert 0 < max(result["win_rate"]) < 1  # the case is really contested


def test_stability_skips_one_class_subsets():
    labels = np.zeros(1000, dtype=int)
    labels[0] = 1
    states = np.zeros((3, 1000, 2))
    result = selection_stability("last", states, labels, resamples=3, fraction=0.002, seed=0)
    assert result["valid_draws"] == 0
    assert result["win_rate"] == [0.0, 0.0, 0.0] and result["modal_layer"] is None


def test_stability_passes_selector_params():
    states, labels = make_layers(seed=16)
    with pytest.raises(ValueError, match="n_components=50"):
        selection_stability("silhouette", states, labels, resamples=1, n_components=50)
    with pytest.raises(TypeError, match="probe_cv"):
        selection_stability("probe_cv", states, labels, resamples=1, n_pcs=3)


def test_stability_seed_also_seeds_the_selector(monkeypatch):
    """``seed`` is both the draw's seed and, for selectors with a seed parameter, the selector's."""
    seen = []

    def recording_probe_cv(layers, labels, *, folds, seed):
        seen.append((folds, seed))
        return [0.0] * len(layers), None, {}

    recorder = selectors.Selector("probe_cv", selectors.STATES, recording_probe_cv, {"folds": 5, "seed": 0})
    monkeypatch.setitem(selectors._REGISTRY, "probe_cv", recorder)
    states, labels = make_layers(seed=17)
    selection_stability("probe_cv", states, labels, resamples=2, seed=9, folds=3)
    assert seen == [(3, 9), (3, 9)]


# --- names, params and shapes ---------------------------------------------------------------------------

def test_selector_params_are_the_defaults_and_a_copy():
    assert selector_params("ilm_pc_patching") == {"n_pcs": 16, "top_pc": 5, "lambdas": (0.5, 1.0)}
    assert selector_params("probe_cv") == {"folds": 5, "seed": 0}
    assert selector_params("silhouette") == {"n_components": 16, "seed": 0}
    assert selector_params("fisher") == selector_params("last") == selector_params("middle") == {}
    assert selector_params("mdl")["fractions"][-1] == 1.0
    selector_params("probe_cv")["folds"] = 99
    assert selector_params("probe_cv")["folds"] == 5


def test_unknown_selector_lists_the_known_ones():
    states, labels = make_layers()
    with pytest.raises(ValueError, match="unknown selector 'probe'.*middle.*probe_cv"):
        score_layers("probe", states, labels)
    with pytest.raises(ValueError, match="unknown selector"):
        selector_params("nope")


def test_unknown_param_names_the_selector_and_its_params():
    states, labels = make_layers()
    with pytest.raises(TypeError, match=r"'probe_cv'.*\['fold'\].*folds, seed"):
        score_layers("probe_cv", states, labels, fold=3)
    with pytest.raises(TypeError, match="'last'.*none"):
        score_layers("last", states, labels, seed=1)


def test_shapes_and_labels_are_checked():
    states, labels = make_layers()
    with pytest.raises(ValueError, match="L x N x H"):
        score_layers("fisher", states[0], labels)
    with pytest.raises(ValueError, match=rf"layer 0 has shape \({N_SAMPLES}, {HIDDEN}\).*N = {N_SAMPLES - 1}"):
        score_layers("fisher", states, labels[:-1])
    with pytest.raises(ValueError, match="layer 1 has shape"):
        score_layers("fisher", [states[0], states[1][:, 0]], labels)
    with pytest.raises(ValueError, match="single class"):
        score_layers("fisher", states, np.zeros(N_SAMPLES, dtype=int))
    with pytest.raises(ValueError, match="no layer"):
        score_layers("last", [], labels)


# --- logme ------------------------------------------------------------------------------------------------

def direct_log_evidence(x: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """Bayesian ridge regression's log evidence from its D x D posterior, no SVD (Bishop, eq. 3.86)."""
    n, d = x.shape
    a = alpha * np.eye(d) + beta * x.T @ x
    mean = beta * np.linalg.solve(a, x.T @ y)
    _, log_det = np.linalg.slogdet(a)
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * np.sum((y - x @ mean) ** 2)
            - alpha / 2 * mean @ mean - log_det / 2 - n / 2 * np.log(2 * np.pi))


@pytest.mark.parametrize("num_classes", [2, 3])
def test_logme_is_the_maximised_evidence_per_sample(num_classes):
    from scipy.optimize import minimize

    n, d = 60, 8
    rng = np.random.default_rng(num_classes)
    labels = np.arange(n) % num_classes
    x = rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(num_classes, d))[labels]
    score = score_layers("logme", x[None], labels, max_iter=500, tol=1e-10)[0]
    expected = []
    for k in range(num_classes):
        y = (labels == k).astype(float)
        best = minimize(lambda p: -direct_log_evidence(x, y, *np.exp(p)), x0=np.zeros(2), method="Nelder-Mead",
                        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 5000})
        expected.append(-best.fun / n)
    assert score == pytest.approx(np.mean(expected), rel=1e-6, abs=1e-8)


def test_logme_with_more_features_than_samples_is_a_stationary_point_of_the_exact_evidence():
    """With D > N the evidence grows towards beta -> inf; LogME takes the interior fixed point. There the
    evidence (all D eigenvalues counted) equals the direct formula and its gradient vanishes."""
    n, d = 20, 35
    rng = np.random.default_rng(7)
    labels = np.arange(n) % 2
    x = rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(2, d))[labels]
    y = labels.astype(float)
    evidence, alpha, beta, converged = logme._logme_evidence(x, y, max_iter=1000, tol=1e-12)
    assert converged
    assert evidence == pytest.approx(direct_log_evidence(x, y, alpha, beta) / n, rel=1e-9)
    step = 1e-4
    for da, db in [(step, 0), (0, step)]:
        up = direct_log_evidence(x, y, alpha * np.exp(da), beta * np.exp(db))
        down = direct_log_evidence(x, y, alpha * np.exp(-da), beta * np.exp(-db))
        # Not exactly 0: the fixed point keeps the reference's 1e-5 guards in alpha's and beta's updates,
        # which matter where the residual is small. A non-stationary point has gradients of order 1-10 here.
        assert abs(up - down) / (2 * step) < 1e-2


def test_logme_prefers_separated_classes_and_reports_its_fixed_point():
    states, labels = make_layers(seed=2)
    result = score_layers_detailed("logme", states, labels)
    assert best_layer(result.scores) == STRONG_LAYER
    assert result.converged is None and result.details["fixed_point_converged"][STRONG_LAYER]
    assert score_layers_detailed("logme", states, labels, max_iter=1).details["fixed_point_converged"] == [False] * 4


# --- ilm_v2 -----------------------------------------------------------------------------------------------

def test_ilm_v2_is_the_weighted_scaled_score_times_the_depth_penalty():
    """Noise, then the same separated layer twice: scaled components 0, 1, 1 -> 0, 1 - 0.3 / 2, 1 - 0.3."""
    states, labels = make_layers(seed=3)
    layers = [states[0], states[STRONG_LAYER], states[STRONG_LAYER].copy()]
    assert score_layers("ilm_v2", layers, labels) == pytest.approx([0.0, 0.85, 0.7])
    assert score_layers("ilm_v2", layers, labels, depth_penalty=0.0) == pytest.approx([0.0, 1.0, 1.0])


def test_ilm_v2_weighs_probe_fisher_and_silhouette_0_4_0_3_0_3():
    """Recomputed by hand from its own components, on layers where they rank the layers differently."""
    states, labels = make_layers(seed=5)
    result = score_layers_detailed("ilm_v2", states, labels)

    def scaled(values):
        values = np.asarray(values, dtype=float)
        return (values - values.min()) / (values.max() - values.min())

    parts = {name: scaled(result.details[name]) for name in ("probe_accuracy", "fisher", "silhouette")}
    assert not np.allclose(parts["probe_accuracy"], parts["fisher"])  # else the weights could not show
    depth = np.arange(NUM_LAYERS) / (NUM_LAYERS - 1)
    expected = (0.4 * parts["probe_accuracy"] + 0.3 * parts["fisher"] + 0.3 * parts["silhouette"]) * (1 - 0.3 * depth)
    assert result.scores == pytest.approx(expected.tolist())


def test_ilm_v2_components_are_computed_on_l2_normalised_states():
    states, labels = make_layers(seed=4)
    norms = np.random.default_rng(0).uniform(0.1, 10, size=(1, N_SAMPLES, 1))
    # Scaling each sample's state changes nothing after L2 normalisation.
    assert score_layers("ilm_v2", states * norms, labels) == pytest.approx(score_layers("ilm_v2", states, labels))
    details = score_layers_detailed("ilm_v2", states, labels).details
    unit = states / np.linalg.norm(states, axis=2, keepdims=True)
    assert details["probe_accuracy"] == pytest.approx(score_layers("probe_cv", unit, labels))
    assert details["fisher"] == pytest.approx(score_layers("fisher", unit, labels))
