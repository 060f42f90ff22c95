"""The report figures: accuracy and selector scores per layer, and methods side by side.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot, so no global figure state
and no GUI backend) and saved as SVG. The SVG is deterministic (fixed hash salt, no date) so
identical inputs give byte-identical files, and text stays text (``svg.fonttype = "none"``) so
titles and labels can be searched in the file. Files are written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pifi.artifacts import atomic_path

SWEEP_COLUMNS = ("layer", "val_mean", "val_low", "val_high", "test_mean", "test_low", "test_high")
METHOD_COLUMNS = ("method", "label", "accuracy", "low", "high")

# Okabe & Ito (2008), distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
# Line styles repeat the colours' job for more selectors than colours, and for greyscale prints.
LINE_STYLES = ("-", "--", "-.", ":")
VALIDATION_COLOR, TEST_COLOR = OKABE_ITO[0], OKABE_ITO[5]
MARKER_COLOR = "#555555"
MAX_LAYER_TICKS = 17

_SVG_RC = {
    "svg.hashsalt": "pifi-ilm",  # element ids from a fixed salt, not a random one
    "svg.fonttype": "none",  # keep text as <text>, not glyph paths
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_SVG_METADATA = {"Date": None}


# --- shared helpers -----------------------------------------------------------------------------

@contextmanager
def _svg_style() -> Iterator[None]:
    with matplotlib.rc_context(_SVG_RC):
        yield


def _save_svg(figure: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="svg", bbox_inches="tight", metadata=_SVG_METADATA)


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str, path) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name} for figure {os.fspath(path)!r} lacks column(s) {missing}; "
                         f"it has {list(frame.columns)} and needs {list(columns)}")


def _style(index: int) -> dict:
    """Colour and line style of the index-th series, cycling colours first."""
    return {"color": OKABE_ITO[index % len(OKABE_ITO)],
            "linestyle": LINE_STYLES[(index // len(OKABE_ITO)) % len(LINE_STYLES)]}


def _layer_ticks(num_layers: int) -> list[int]:
    step = max(1, math.ceil(num_layers / MAX_LAYER_TICKS))
    return list(range(0, num_layers, step))


# --- layer profile ------------------------------------------------------------------------------

def normalized_scores(scores: Sequence[float]) -> np.ndarray:
    """Min-max scale to [0, 1] over the finite entries; constant scores -> 0.5; NaN stays NaN."""
    values = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(values)
    scaled = np.full(values.shape, np.nan)
    if not finite.any():
        return scaled
    low, high = values[finite].min(), values[finite].max()
    scaled[finite] = 0.5 if high == low else (values[finite] - low) / (high - low)
    return scaled


def _num_layers(selector_scores: Mapping[str, Sequence[float]], sweep: pd.DataFrame, last_layer: int,
                path) -> int:
    """L: the selectors' common score length, or (without selectors) enough to show sweep and last layer."""
    lengths = {name: len(scores) for name, scores in selector_scores.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"selector scores for figure {os.fspath(path)!r} have different lengths {lengths}: "
                         "each must hold one score per LLM layer")
    if lengths:
        return next(iter(lengths.values()))
    swept = [int(layer) for layer in sweep["layer"]]
    return max([last_layer, *swept]) + 1


def _check_layers(chosen: Mapping[str, int], selector_scores: Mapping[str, Sequence[float]],
                  num_layers: int, path) -> None:
    for name, layer in chosen.items():
        if name in selector_scores and not 0 <= layer < num_layers:
            raise ValueError(f"selector {name!r} chose layer {layer}, outside 0..{num_layers - 1} "
                             f"(figure {os.fspath(path)!r})")


def _mark_layer(ax: Axes, layer: int | None, label: str | None, linestyle: str) -> None:
    if layer is not None:
        ax.axvline(layer, color=MARKER_COLOR, linestyle=linestyle, linewidth=1.2, label=label)


def _plot_accuracy_band(ax: Axes, sweep: pd.DataFrame, prefix: str, label: str, color: str) -> None:
    layers = sweep["layer"].to_numpy()
    ax.fill_between(layers, 100 * sweep[f"{prefix}_low"].to_numpy(dtype=float),
                    100 * sweep[f"{prefix}_high"].to_numpy(dtype=float), color=color, alpha=0.2, linewidth=0)
    ax.plot(layers, 100 * sweep[f"{prefix}_mean"].to_numpy(dtype=float), color=color, marker="o",
            markersize=4, label=label)


def _plot_sweep_panel(ax: Axes, sweep: pd.DataFrame, oracle_layer: int | None, last_layer: int) -> None:
    sweep = sweep.sort_values("layer")
    _plot_accuracy_band(ax, sweep, "val", "validation (mean over seeds, 95% CI)", VALIDATION_COLOR)
    _plot_accuracy_band(ax, sweep, "test", "test (mean over seeds, 95% CI)", TEST_COLOR)
    if oracle_layer is not None:
        at_oracle = sweep.loc[sweep["layer"] == oracle_layer, "val_mean"]
        _mark_layer(ax, oracle_layer, f"oracle: layer {oracle_layer} (best validation)", "--")
        if not at_oracle.empty:
            ax.plot([oracle_layer], [100 * float(at_oracle.iloc[0])], marker="*", markersize=15,
                    color=VALIDATION_COLOR, markeredgecolor="black", linestyle="none")
    _mark_layer(ax, last_layer, f"last layer ({last_layer})", ":")
    ax.set_title("PiFi accuracy per plugged LLM layer (sweep)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _plot_selector_panel(ax: Axes, selector_scores: Mapping[str, Sequence[float]], chosen: Mapping[str, int],
                         oracle_layer: int | None, last_layer: int, num_layers: int, *,
                         explain_markers: bool) -> None:
    """``explain_markers``: put the oracle/last-layer lines in this legend (no sweep panel does it)."""
    layers = np.arange(num_layers)
    for index, (name, scores) in enumerate(selector_scores.items()):
        style = _style(index)
        scaled = normalized_scores(scores)
        label = name if name not in chosen else f"{name} (chose layer {chosen[name]})"
        ax.plot(layers, scaled, label=label, linewidth=1.5, **style)
        if name in chosen:
            ax.plot([chosen[name]], [scaled[chosen[name]]], marker="*", markersize=13, color=style["color"],
                    markeredgecolor="black", linestyle="none")
    _mark_layer(ax, oracle_layer, f"oracle: layer {oracle_layer}" if explain_markers else None, "--")
    _mark_layer(ax, last_layer, f"last layer ({last_layer})" if explain_markers else None, ":")
    ax.set_title("Selector scores per layer (min-max normalised; star = chosen layer)")
    ax.set_ylabel("normalised score")
    ax.set_ylim(-0.05, 1.05)
    if selector_scores or explain_markers:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="selector")


def plot_layer_profile(path: str | os.PathLike, *, title: str, sweep: pd.DataFrame,
                       selector_scores: Mapping[str, Sequence[float]], chosen: Mapping[str, int],
                       oracle_layer: int | None, last_layer: int) -> None:
    """Write an SVG of accuracy per plugged layer (top) over every selector's layer scores (bottom).

    ``sweep`` has one row per swept layer with columns layer, val_mean, val_low, val_high,
    test_mean, test_low, test_high (fractions; low/high bound the 95% interval); empty when no
    sweep ran, and then only the selector panel is drawn. ``selector_scores`` maps selector name ->
    one score per layer (higher = better); ``chosen`` maps selector name -> the layer it picked.
    """
    _require_columns(sweep, SWEEP_COLUMNS, "sweep", path)
    num_layers = _num_layers(selector_scores, sweep, last_layer, path)
    _check_layers(chosen, selector_scores, num_layers, path)
    has_sweep = not sweep.empty
    with _svg_style():
        figure = Figure(figsize=(9.0, 7.0 if has_sweep else 4.0), layout="constrained")
        axes = figure.subplots(2 if has_sweep else 1, 1, sharex=True, squeeze=False)[:, 0]
        if has_sweep:
            _plot_sweep_panel(axes[0], sweep, oracle_layer, last_layer)
        _plot_selector_panel(axes[-1], selector_scores, chosen, oracle_layer, last_layer, num_layers,
                             explain_markers=not has_sweep)
        axes[-1].set_xlabel("LLM layer index")
        axes[-1].set_xticks(_layer_ticks(num_layers))
        axes[-1].set_xlim(-0.5, num_layers - 0.5)
        figure.suptitle(title)
        _save_svg(figure, path)


# --- method comparison --------------------------------------------------------------------------

def _interval_errors(methods: pd.DataFrame, path) -> np.ndarray:
    """2 x n distances below and above each accuracy, in %; 0 where an interval bound is missing."""
    accuracy = methods["accuracy"].to_numpy(dtype=float)
    if not np.isfinite(accuracy).all():
        raise ValueError(f"methods for figure {os.fspath(path)!r} have a missing accuracy: "
                         f"{methods.loc[~np.isfinite(accuracy), 'method'].tolist()}")
    below = accuracy - methods["low"].to_numpy(dtype=float)
    above = methods["high"].to_numpy(dtype=float) - accuracy
    errors = np.nan_to_num(np.vstack([below, above]), nan=0.0)
    if (errors < 0).any():
        raise ValueError(f"methods for figure {os.fspath(path)!r} need low <= accuracy <= high; "
                         f"check the rows of {methods.loc[(errors < 0).any(axis=0), 'method'].tolist()}")
    return 100 * errors


def plot_method_comparison(path: str | os.PathLike, *, title: str, methods: pd.DataFrame) -> None:
    """Write an SVG with each method's test accuracy and 95% interval, one row per method, top to bottom.

    ``methods`` has columns method, label (shown on the axis, e.g. "pifi_ilm (layer 12)"),
    accuracy, low, high (fractions).
    """
    _require_columns(methods, METHOD_COLUMNS, "methods", path)
    if methods.empty:
        raise ValueError(f"no methods to plot for figure {os.fspath(path)!r}")
    errors = _interval_errors(methods, path)
    accuracy = 100 * methods["accuracy"].to_numpy(dtype=float)
    positions = np.arange(len(methods))[::-1]  # first row on top
    with _svg_style():
        figure = Figure(figsize=(7.5, 1.2 + 0.45 * len(methods)), layout="constrained")
        ax = figure.subplots()
        for index, position in enumerate(positions):
            ax.errorbar(accuracy[index], position, xerr=errors[:, index : index + 1], fmt="o", capsize=4,
                        markersize=6, color=OKABE_ITO[index % len(OKABE_ITO)])
        ax.set_yticks(positions, labels=methods["label"].astype(str).tolist())
        ax.set_ylim(-0.6, len(methods) - 0.4)
        ax.set_xlabel("test accuracy (%), point = mean over seeds, bar = 95% bootstrap CI")
        ax.set_title(title)
        _save_svg(figure, path)
