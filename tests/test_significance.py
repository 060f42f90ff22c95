"""A paired comparison is significant exactly when its bootstrap interval excludes 0: constructed cases on
both sides of that line, including an interval that straddles 0."""

from __future__ import annotations

import numpy as np
import pytest

from pifi.stats import compare, paired_difference_ci

ROWS = 200


def pair(a_only: int, b_only: int, both: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """One seed x ROWS rows: both methods right on ``both`` rows, only a on ``a_only``, only b on ``b_only``."""
    a, b = np.zeros((1, ROWS), dtype=np.int8), np.zeros((1, ROWS), dtype=np.int8)
    a[0, :both] = b[0, :both] = 1
    a[0, both:both + a_only] = 1
    b[0, both + a_only:both + a_only + b_only] = 1
    return a, b


def test_an_interval_that_straddles_zero_is_not_significant():
    # a is right on 12 rows b gets wrong, b on 10 rows a gets wrong: +1 pt, but the rows that differ are
    # few: the standard error is about sqrt(22) / 200 = 2.3 pts, so the 95% interval holds 0.
    a, b = pair(12, 10)
    comparison = compare(a, b, n_resamples=2000, seed=1)
    assert comparison.difference == pytest.approx(2 / ROWS)
    assert comparison.low < 0.0 < comparison.high
    assert (comparison.low, comparison.high) == paired_difference_ci(a, b, n_resamples=2000, seed=1)
    assert not comparison.significant
    assert comparison.verdict("a", "b").startswith("no significant difference")
    reverse = compare(b, a, n_resamples=2000, seed=1)
    assert reverse.low < 0.0 < reverse.high and not reverse.significant


def test_an_interval_above_zero_is_significant_and_better():
    a, b = pair(40, 2)  # +19 pts with a standard error of about 3 pts
    comparison = compare(a, b, n_resamples=2000, seed=1)
    assert 0.0 < comparison.low < comparison.difference < comparison.high
    assert comparison.significant and comparison.verdict("a", "b").startswith("a better than b")


def test_an_interval_below_zero_is_significant_and_worse():
    a, b = pair(2, 40)
    comparison = compare(a, b, n_resamples=2000, seed=1)
    assert comparison.low < comparison.difference < comparison.high < 0.0
    assert comparison.significant and comparison.verdict("a", "b").startswith("a worse than b")
