"""Honest statistics for judging methods and layer selectors (docs/design.md, "Judging a selector").

Accuracy intervals come from a bootstrap over *both* sources of variation we have: the test rows
and the training seeds. Each resample draws S seeds with replacement and R rows with replacement
(independently of each other) and applies the same draw to every method, so two methods judged on
the same rows are compared pairwise. Inputs are ``seeds x rows`` arrays of 0/1 (row correct or not).

Resampling is vectorised: with seed counts ``w_seed`` (B x S) and row indices ``idx`` (B x R),
the resampled mean of a matrix D is ``sum_r (w_seed @ D)[b, idx[b, r]] / (S * R)``. Resamples are
processed in chunks so the B x R intermediates stay within a fixed memory budget.

Random draws, for reproducibility: ``rng = np.random.default_rng(seed)``; per chunk of n
resamples, seed indices ``rng.integers(0, S, size=(n, S))`` and then row indices
``rng.integers(0, R, size=(n, R))``. The chunk size depends only on R.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, spearmanr

# Three float64/int64 arrays of chunk x rows live at once while a chunk is resampled.
_CHUNK_MEMORY_BYTES = 150_000_000
_ARRAYS_PER_CHUNK = 3


# --- input checks -----------------------------------------------------------------------------

def _as_correctness(correct, name: str) -> np.ndarray:
    """A seeds x rows float64 matrix of 0/1, or a ValueError saying what is wrong with ``name``."""
    array = np.asarray(correct)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D seeds x rows array of 0/1, got shape {array.shape}; "
                         "stack one row of per-example correctness per seed")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}): need at least one seed and one row")
    values = array.astype(np.float64)
    if not np.all((values == 0.0) | (values == 1.0)):
        bad = values[~((values == 0.0) | (values == 1.0))]
        raise ValueError(f"{name} must hold only 0/1 (correct or not), found e.g. {bad.flat[0]!r} "
                         f"(NaN means a missing prediction: drop that seed or row from both methods)")
    return values


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"correct_a has shape {a.shape} but correct_b has {b.shape}: a paired comparison "
                         "needs the same seeds and the same test rows, in the same order, for both methods")


def _check_resampling_args(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")


# --- bootstrap ----------------------------------------------------------------------------------

def _chunk_size(n_rows: int, n_resamples: int) -> int:
    per_resample = _ARRAYS_PER_CHUNK * 8 * n_rows
    return max(1, min(n_resamples, _CHUNK_MEMORY_BYTES // per_resample))


def _seed_counts(seed_indices: np.ndarray, n_seeds: int) -> np.ndarray:
    """How often each seed was drawn, per resample: (n x S) indices -> (n x S) counts."""
    n = seed_indices.shape[0]
    offsets = seed_indices + n_seeds * np.arange(n)[:, None]
    return np.bincount(offsets.ravel(), minlength=n * n_seeds).reshape(n, n_seeds).astype(np.float64)


def _bootstrap_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """The mean of ``values`` (seeds x rows) under each of ``n_resamples`` seed-and-row resamples."""
    n_seeds, n_rows = values.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    chunk = _chunk_size(n_rows, n_resamples)
    for start in range(0, n_resamples, chunk):
        n = min(chunk, n_resamples - start)
        seed_indices = rng.integers(0, n_seeds, size=(n, n_seeds))
        row_indices = rng.integers(0, n_rows, size=(n, n_rows))
        per_row = _seed_counts(seed_indices, n_seeds) @ values  # n x R: seed-weighted row sums
        means[start:start + n] = np.take_along_axis(per_row, row_indices, axis=1).sum(axis=1)
    return means / (n_seeds * n_rows)


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_difference_ci(correct_a, correct_b, *, n_resamples: int = 10_000, seed: int = 0,
                         confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy(a) - accuracy(b), as a fraction.

    ``correct_a`` and ``correct_b`` are seeds x rows arrays of 0/1 for the same seeds and the same
    test rows in the same order. Each resample draws seeds with replacement and rows with
    replacement, independently, and applies that one draw to both methods. Deterministic for a
    given ``seed``.
    """
    _check_resampling_args(n_resamples, confidence)
    a = _as_correctness(correct_a, "correct_a")
    b = _as_correctness(correct_b, "correct_b")
    _check_same_shape(a, b)
    return _percentile_interval(_bootstrap_means(a - b, int(n_resamples), seed), confidence)


def accuracy_ci(correct, *, n_resamples: int = 10_000, seed: int = 0,
                confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of one method's accuracy (seeds x rows of 0/1), as a fraction.

    Same resampling as :func:`paired_difference_ci`, so with the same ``seed`` and shape both see
    the same draws.
    """
    _check_resampling_args(n_resamples, confidence)
    values = _as_correctness(correct, "correct")
    return _percentile_interval(_bootstrap_means(values, int(n_resamples), seed), confidence)


# --- comparisons --------------------------------------------------------------------------------

def _points(fraction: float) -> str:
    return f"{100.0 * fraction:+.2f}"


@dataclass(frozen=True)
class Comparison:
    """accuracy(a) - accuracy(b) as fractions: the point estimate and its bootstrap interval."""

    difference: float
    low: float
    high: float
    significant: bool
    confidence: float = 0.95

    def verdict(self, name_a: str, name_b: str) -> str:
        """One line for a report; every number is a - b in accuracy points.

        e.g. "pifi_ilm better than pifi_last (+1.23 pts, 95% CI +0.40 to +2.10)",
        "pifi_ilm worse than base (-1.23 pts, 95% CI -2.10 to -0.40)" or
        "no significant difference (+0.20 pts, 95% CI -0.50 to +0.90)".
        """
        numbers = (f"{_points(self.difference)} pts, {100 * self.confidence:g}% CI "
                   f"{_points(self.low)} to {_points(self.high)}")
        if not self.significant:
            return f"no significant difference ({numbers})"
        direction = "better" if self.low > 0 else "worse"
        return f"{name_a} {direction} than {name_b} ({numbers})"


def compare(correct_a, correct_b, *, n_resamples: int = 10_000, seed: int = 0,
            confidence: float = 0.95) -> Comparison:
    """Paired comparison of two methods on the same seeds x rows; significant iff the CI excludes 0."""
    low, high = paired_difference_ci(correct_a, correct_b, n_resamples=n_resamples, seed=seed,
                                     confidence=confidence)
    difference = float(np.mean(np.asarray(correct_a, dtype=np.float64))
                       - np.mean(np.asarray(correct_b, dtype=np.float64)))
    return Comparison(difference=difference, low=low, high=high,
                      significant=bool(low > 0.0 or high < 0.0), confidence=confidence)


# --- layers: oracle, rank, Spearman -------------------------------------------------------------

def _finite_layers(values_by_layer: Mapping[int, float]) -> dict[int, float]:
    """Drop layers whose value is NaN/inf (e.g. a sweep layer whose runs all failed)."""
    return {int(layer): float(value) for layer, value in values_by_layer.items() if math.isfinite(value)}


def oracle_layer(val_acc_by_layer: Mapping[int, float]) -> int:
    """The swept layer with the best mean validation accuracy; the lowest layer on ties.

    Layers with a NaN accuracy are ignored; raises ValueError when no layer has one.
    """
    finite = _finite_layers(val_acc_by_layer)
    if not finite:
        raise ValueError(f"no swept layer has a finite validation accuracy ({dict(val_acc_by_layer)!r}): "
                         "the oracle needs at least one completed sweep layer")
    best = max(finite.values())
    return min(layer for layer, value in finite.items() if value == best)


def rank_of(layer: int, val_acc: float, val_acc_by_layer: Mapping[int, float]) -> int:
    """The place (1 = best) of ``layer`` with validation accuracy ``val_acc`` among the swept layers.

    1 + the number of *other* swept layers strictly better, so ties share the better place and a
    layer that was not swept gets the place it would take if inserted. NaN sweep entries count as
    not better; a NaN ``val_acc`` raises ValueError (the rank is undefined).
    """
    if not math.isfinite(val_acc):
        raise ValueError(f"layer {layer} has no finite validation accuracy ({val_acc!r}): cannot rank it")
    others = _finite_layers(val_acc_by_layer)
    others.pop(int(layer), None)
    return 1 + sum(value > val_acc for value in others.values())


def _by_layer(values: Mapping[int, float] | Sequence[float]) -> Mapping[int, float]:
    return values if isinstance(values, Mapping) else dict(enumerate(values))


def _paired_by_layer(scores_by_layer: Mapping[int, float] | Sequence[float],
                     val_acc_by_layer: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray] | None:
    """Scores and accuracies of the layers finite on both sides; None when fewer than 3 remain or either
    side is constant there (a rank correlation is undefined)."""
    scores = _finite_layers(_by_layer(scores_by_layer))
    accuracies = _finite_layers(val_acc_by_layer)
    layers = sorted(scores.keys() & accuracies.keys())
    x = np.array([scores[layer] for layer in layers])
    y = np.array([accuracies[layer] for layer in layers])
    if len(layers) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return x, y


def spearman(scores_by_layer: Mapping[int, float] | Sequence[float],
             val_acc_by_layer: Mapping[int, float]) -> float | None:
    """Spearman rho between a selector's layer scores and the sweep's mean validation accuracy.

    ``scores_by_layer`` maps layer -> score, or is a sequence indexed by layer. Only layers with a
    finite value on both sides count. None when fewer than 3 layers remain or either side is
    constant there (rho is undefined).
    """
    paired = _paired_by_layer(scores_by_layer, val_acc_by_layer)
    return None if paired is None else float(spearmanr(*paired).statistic)


def kendall(scores_by_layer: Mapping[int, float] | Sequence[float],
            val_acc_by_layer: Mapping[int, float]) -> float | None:
    """Kendall tau-b between a selector's layer scores and the sweep's validation accuracy (as ``spearman``)."""
    paired = _paired_by_layer(scores_by_layer, val_acc_by_layer)
    return None if paired is None else float(kendalltau(*paired).statistic)


def in_top(k: int, layer: int, scores_by_layer: Mapping[int, float] | Sequence[float],
           among: Iterable[int]) -> bool:
    """Is ``layer`` among the ``k`` best-scored of the layers ``among`` (ties share the better place)?"""
    scores = _by_layer(scores_by_layer)
    candidates = [other for other in among if other in scores and math.isfinite(scores[other])]
    if layer not in candidates:
        return False
    return 1 + sum(scores[other] > scores[layer] for other in candidates if other != layer) <= k
