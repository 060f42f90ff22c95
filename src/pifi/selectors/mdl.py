"""mdl: minus the online code length of a probe on each layer's pooled states (Voita & Titov 2020), in bits."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pifi.selectors._declaration import STATES, Result, Selector
from pifi.selectors._probes import ConvergenceWatch, probe_log_proba, standardized_probe


def _block_ends(num_rows: int, fractions: Sequence[float]) -> list[int]:
    """Row counts at which the online code's blocks end, from increasing fractions of N ending at 1."""
    fractions = [float(f) for f in fractions]
    ends = [round(f * num_rows) for f in fractions]
    if fractions[-1] != 1.0 or ends[0] < 1 or any(b <= a for a, b in zip(ends, ends[1:])):
        raise ValueError(f"mdl: fractions={fractions} must increase, end at 1.0 and give every block at least "
                         f"one of the {num_rows} rows (block ends {ends})")
    return ends


def _stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random row order that spreads every class evenly, so each block's prefix holds every class early."""
    position = np.empty(len(labels))
    for k in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == k))
        position[rows] = (np.arange(len(rows)) + rng.random()) / len(rows)
    return np.argsort(position, kind="stable")


def _block_bits(train_x: np.ndarray, train_y: np.ndarray, block_x: np.ndarray, block_y: np.ndarray,
                classes: np.ndarray) -> tuple[float, bool]:
    """Bits to send block_y given block_x with a code learned from the rows before it; and convergence."""
    codes = np.searchsorted(classes, block_y)
    if np.unique(train_y).size < classes.size:
        # A probe gives no probability to a class it has not seen: use Laplace-smoothed frequencies.
        counts = np.array([(train_y == k).sum() for k in classes])
        p = (counts + 1) / (len(train_y) + classes.size)
        return float(-np.log2(p[codes]).sum()), True
    with ConvergenceWatch() as watch:
        probe = standardized_probe().fit(train_x, train_y)
    log_p = probe_log_proba(probe, block_x)
    return float(-log_p[np.arange(len(codes)), codes].sum() / math.log(2)), watch.converged


def _online_code_length(x: np.ndarray, labels: np.ndarray, order: np.ndarray, ends: list[int]) -> tuple[float, bool]:
    """The first block in the uniform code, every later one with a probe trained on all rows before it."""
    x, y = x[order], labels[order]
    classes = np.unique(labels)
    bits, converged = ends[0] * math.log2(classes.size), True
    for start, stop in zip(ends, ends[1:]):
        block, block_converged = _block_bits(x[:start], y[:start], x[start:stop], y[start:stop], classes)
        bits += block
        converged = converged and block_converged
    return bits, converged


def mdl(layers: list[np.ndarray], labels: np.ndarray, *, fractions: Sequence[float], seed: int) -> Result:
    ends = _block_ends(len(labels), fractions)
    order = _stratified_order(labels, np.random.default_rng(seed))  # one order for all layers: a fair comparison
    results = [_online_code_length(x, labels, order, ends) for x in layers]
    code_length = [bits for bits, _ in results]
    uniform = len(labels) * math.log2(np.unique(labels).size)
    details = {"code_length_bits": code_length, "uniform_code_length_bits": uniform,
               "compression": [uniform / bits for bits in code_length], "block_ends": ends}
    return [-bits for bits in code_length], [ok for _, ok in results], details


# Blocks double in size as in Voita & Titov; the first (5% of N, 20 of 400 rows) is sent in the uniform code
# and gives the first probe a few rows of every class.
SELECTOR = Selector("mdl", STATES, mdl, {"fractions": (0.05, 0.1, 0.2, 0.4, 0.8, 1.0), "seed": 0},
                    "minus the online code length of a probe, in bits")
