"""Bootstrap intervals, comparisons and the layer statistics (oracle, rank, Spearman)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pifi.stats import (
    Comparison,
    accuracy_ci,
    compare,
    oracle_layer,
    paired_difference_ci,
    rank_of,
    spearman,
)


def _random_correctness(rng: np.random.Generator, shape: tuple[int, int], p: float) -> np.ndarray:
    return (rng.random(shape) < p).astype(np.int8)


def _slow_paired_bootstrap(a, b, n_resamples: int, seed: int, confidence: float) -> tuple[float, float]:
    """One resample at a time, by indexing: pick seeds, pick rows, compare the two accuracies.

    Draws exactly what stats.py documents for a single chunk: seed indices (B x S) then row indices (B x R).
    """
    n_seeds, n_rows = a.shape
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    row_draws = rng.integers(0, n_rows, size=(n_resamples, n_rows))
    differences = []
    for seeds, rows in zip(seed_draws, row_draws):
        differences.append(a[seeds][:, rows].mean() - b[seeds][:, rows].mean())
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(differences, [tail, 100 - tail])
    return float(low), float(high)


# --- paired_difference_ci ----------------------------------------------------------------------

def test_identical_predictions_give_exactly_zero_interval():
    correct = _random_correctness(np.random.default_rng(0), (4, 300), 0.7)
    assert paired_difference_ci(correct, correct.copy(), n_resamples=500) == (0.0, 0.0)


def test_clear_gap_excludes_zero_and_contains_true_difference():
    n_seeds, n_rows = 5, 500
    always = np.ones((n_seeds, n_rows), dtype=np.int8)
    half = np.zeros((n_seeds, n_rows), dtype=np.int8)
    half[:, ::2] = 1  # every seed gets exactly the even rows right: accuracy 0.5
    low, high = paired_difference_ci(always, half, n_resamples=2000, seed=3)
    assert 0.0 < low <= 0.5 <= high
    # Row resampling alone moves the half-correct accuracy by ~ sqrt(.25 / 500) = 2.2 pts.
    assert high - low < 0.12


def test_pure_noise_pair_interval_contains_zero():
    rng = np.random.default_rng(11)
    a = _random_correctness(rng, (5, 400), 0.6)
    b = _random_correctness(rng, (5, 400), 0.6)
    low, high = paired_difference_ci(a, b, n_resamples=2000, seed=0)
    assert low < 0.0 < high


def test_deterministic_for_fixed_seed_and_varies_with_seed():
    rng = np.random.default_rng(5)
    a = _random_correctness(rng, (3, 200), 0.7)
    b = _random_correctness(rng, (3, 200), 0.6)
    first = paired_difference_ci(a, b, n_resamples=1000, seed=42)
    assert paired_difference_ci(a, b, n_resamples=1000, seed=42) == first
    assert paired_difference_ci(a, b, n_resamples=1000, seed=43) != first


def test_vectorised_matches_slow_loop_with_same_draws():
    rng = np.random.default_rng(7)
    a = _random_correctness(rng, (3, 17), 0.7)
    b = _random_correctness(rng, (3, 17), 0.5)
    expected = _slow_paired_bootstrap(a, b, n_resamples=400, seed=9, confidence=0.9)
    actual = paired_difference_ci(a, b, n_resamples=400, seed=9, confidence=0.9)
    assert actual == pytest.approx(expected, abs=1e-12)


def test_chunked_resampling_matches_slow_loop_in_distribution(monkeypatch):
    # A tiny memory budget forces one resample per chunk: the draws differ from the slow loop's,
    # but both are the same bootstrap, so their intervals agree up to Monte Carlo error.
    import pifi.stats as stats

    monkeypatch.setattr(stats, "_CHUNK_MEMORY_BYTES", 1)
    rng = np.random.default_rng(8)
    a = _random_correctness(rng, (4, 60), 0.75)
    b = _random_correctness(rng, (4, 60), 0.55)
    low, high = paired_difference_ci(a, b, n_resamples=3000, seed=1)
    slow_low, slow_high = _slow_paired_bootstrap(a, b, n_resamples=3000, seed=2, confidence=0.95)
    assert low == pytest.approx(slow_low, abs=0.02)
    assert high == pytest.approx(slow_high, abs=0.02)


def test_seed_resampling_widens_interval_when_seeds_disagree():
    # Each seed is internally consistent but seeds disagree wildly: resampling rows alone would
    # give a narrow interval, resampling seeds too must not.
    n_rows = 400
    a = np.array([np.ones(n_rows), np.zeros(n_rows), np.ones(n_rows), np.zeros(n_rows)], dtype=np.int8)
    b = np.full((4, n_rows), 0, dtype=np.int8)
    b[:, ::2] = 1
    low, high = paired_difference_ci(a, b, n_resamples=2000, seed=0)
    assert low < -0.2 and high > 0.2


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.ones(10), np.ones(10), "2-D"),
        (np.ones((2, 10)), np.ones((2, 11)), "same seeds"),
        (np.ones((2, 10)), np.full((2, 10), 0.5), "only 0/1"),
        (np.ones((2, 10)), np.full((2, 10), np.nan), "only 0/1"),
        (np.ones((0, 10)), np.ones((0, 10)), "empty"),
    ],
)
def test_bad_inputs_raise_with_clear_message(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_difference_ci(a, b, n_resamples=10)


@pytest.mark.parametrize(("kwargs", "message"), [({"n_resamples": 0}, "n_resamples"),
                                                  ({"confidence": 1.0}, "confidence")])
def test_bad_resampling_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_difference_ci(np.ones((1, 3)), np.ones((1, 3)), **kwargs)


# --- accuracy_ci -------------------------------------------------------------------------------

def test_accuracy_ci_brackets_accuracy_and_is_exact_for_constant_predictions():
    assert accuracy_ci(np.ones((2, 50)), n_resamples=200) == (1.0, 1.0)
    correct = np.zeros((3, 1000), dtype=np.int8)
    correct[:, :800] = 1
    low, high = accuracy_ci(correct, n_resamples=2000, seed=0)
    # Binomial standard error sqrt(.8 * .2 / 1000) = 1.26 pts: the 95% interval is about +-2.5 pts.
    assert 0.77 < low < 0.8 < high < 0.83


# --- compare / verdict -------------------------------------------------------------------------

def test_compare_point_estimate_significance_and_verdict():
    better = np.ones((5, 500), dtype=np.int8)
    half = np.zeros((5, 500), dtype=np.int8)
    half[:, ::2] = 1
    comparison = compare(better, half, n_resamples=1000)
    assert comparison.difference == pytest.approx(0.5)
    assert comparison.significant
    assert comparison.verdict("pifi_ilm", "base").startswith("pifi_ilm better than base (+50.00 pts, 95% CI +")

    reverse = compare(half, better, n_resamples=1000)
    assert reverse.significant and reverse.difference == pytest.approx(-0.5)
    assert reverse.verdict("base", "pifi_ilm").startswith("base worse than pifi_ilm (-50.00 pts")


def test_verdict_formats_points_and_interval():
    assert (Comparison(0.0123, 0.004, 0.021, True).verdict("pifi_ilm", "pifi_last")
            == "pifi_ilm better than pifi_last (+1.23 pts, 95% CI +0.40 to +2.10)")
    assert (Comparison(0.002, -0.005, 0.009, False).verdict("pifi_ilm", "pifi_last")
            == "no significant difference (+0.20 pts, 95% CI -0.50 to +0.90)")


def test_compare_identical_is_not_significant():
    correct = _random_correctness(np.random.default_rng(2), (2, 100), 0.5)
    comparison = compare(correct, correct, n_resamples=100)
    assert comparison == Comparison(0.0, 0.0, 0.0, False)


# --- oracle / rank / spearman ------------------------------------------------------------------

def test_oracle_is_argmax_with_lowest_layer_on_ties_and_skips_nan():
    assert oracle_layer({0: 0.5, 3: 0.8, 6: 0.7}) == 3
    assert oracle_layer({9: 0.8, 3: 0.8, 6: 0.7}) == 3
    assert oracle_layer({0: math.nan, 3: 0.6, 6: 0.7}) == 6
    with pytest.raises(ValueError, match="no swept layer"):
        oracle_layer({0: math.nan})
    with pytest.raises(ValueError, match="no swept layer"):
        oracle_layer({})


def test_rank_counts_strictly_better_other_layers():
    sweep = {0: 0.60, 4: 0.80, 8: 0.70, 12: 0.70}
    assert rank_of(4, 0.80, sweep) == 1
    assert rank_of(8, 0.70, sweep) == 2  # ties with layer 12 share the better place
    assert rank_of(12, 0.70, sweep) == 2
    assert rank_of(0, 0.60, sweep) == 4
    # An unswept layer takes the place it would get if inserted.
    assert rank_of(6, 0.75, sweep) == 2
    assert rank_of(6, 0.90, sweep) == 1
    assert rank_of(6, 0.50, sweep) == 5


def test_rank_ignores_nan_sweep_entries_and_rejects_nan_accuracy():
    assert rank_of(2, 0.5, {0: math.nan, 1: 0.6, 2: 0.5}) == 2
    with pytest.raises(ValueError, match="cannot rank"):
        rank_of(2, math.nan, {0: 0.6})


def test_spearman_hand_computed_and_over_common_layers():
    accuracies = {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.65}
    # Same order -> 1; reversed -> -1.
    assert spearman({0: 1.0, 1: 2.0, 2: 4.0, 3: 3.0}, accuracies) == pytest.approx(1.0)
    assert spearman([4.0, 3.0, 1.0, 2.0], accuracies) == pytest.approx(-1.0)
    # Ranks x = (1, 2, 3, 4), y = (1, 2, 4, 3): d^2 sum = 2 -> rho = 1 - 6*2 / (4*15) = 0.8.
    assert spearman([10.0, 20.0, 30.0, 40.0], accuracies) == pytest.approx(0.8)
    # Only layers present on both sides count: layer 7 has no sweep value, layer 3's score is NaN.
    assert spearman({0: 1.0, 1: 2.0, 2: 3.0, 3: math.nan, 7: -5.0}, accuracies) == pytest.approx(1.0)


def test_spearman_with_ties_uses_average_ranks():
    # x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4): Pearson of the ranks = 4.5 / sqrt(4.5 * 5).
    rho = spearman([1.0, 2.0, 2.0, 3.0], {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4})
    assert rho == pytest.approx(4.5 / math.sqrt(4.5 * 5.0))


def test_spearman_undefined_cases_return_none():
    accuracies = {0: 0.5, 1: 0.6, 2: 0.7}
    assert spearman([1.0, 2.0], accuracies) is None  # two common layers
    assert spearman([3.0, 3.0, 3.0], accuracies) is None  # constant scores
    assert spearman([1.0, 2.0, 3.0], {0: 0.5, 1: 0.5, 2: 0.5}) is None  # constant accuracies


def test_kendall_tau_by_hand_and_undefined_cases():
    from pifi.stats import kendall

    # 4 layers: pairs (0,1) c, (0,2) c, (0,3) d, (1,2) c, (1,3) d, (2,3) d -> (3 - 3) / 6 = 0
    assert kendall([1, 2, 3, 0.5], {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}) == pytest.approx(0.0)
    assert kendall([1, 2, 3, 4], {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}) == pytest.approx(1.0)
    assert kendall([1, 2], {0: 0.1, 1: 0.2}) is None  # fewer than 3 layers
    assert kendall([1, 1, 1], {0: 0.1, 1: 0.2, 2: 0.3}) is None  # constant scores


def test_oracle_in_top_k_counts_only_the_layers_asked_and_shares_ties():
    from pifi.stats import in_top

    scores = [0.1, 0.9, 0.8, 0.7, 0.2, 0.95]
    swept = [0, 2, 4, 5]
    assert in_top(3, 4, scores, swept)          # among 0, 2, 4, 5 it is third (0.95, 0.8, 0.2)
    assert not in_top(3, 0, scores, swept)      # fourth
    assert not in_top(3, 4, scores, range(6))   # among all six it is fifth
    assert not in_top(3, 1, scores, swept)      # not a swept layer
    assert in_top(1, 2, [0.5, 0.5, 0.5], [0, 1, 2])  # ties share the better place
