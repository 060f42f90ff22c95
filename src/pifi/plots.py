"""The report figures: which layer (sweep over selectors' choices) and is it real (paired differences).

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
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory, offset_copy

from pifi.artifacts import atomic_path
from pifi.summary_text import signed

SWEEP_COLUMNS = ("layer", "val_mean", "val_low", "val_high", "test_mean", "test_low", "test_high")
COMPARISON_COLUMNS = ("a", "b", "difference", "low", "high", "significant")
SELECTOR_COLUMNS = ("selector", "drives_pifi_ilm", "layer", "win_rate", "oracle_layer", "regret", "regret_low",
                    "regret_high", "regret_significant")
# The paired differences drawn, in order (a − b), as summary.COMPARISONS writes them; the oracle's
# row comes from the driving selector's regret instead (it exists even without a pifi_oracle method).
PAIRS = (("pifi_ilm", "base"), ("pifi_ilm", "pifi_last"), ("pifi_last", "base"))
MINUS = "\u2212"  # a real minus sign in labels, not a hyphen

# Okabe & Ito (2008), distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
VALIDATION_COLOR, TEST_COLOR, CHOSEN_COLOR = OKABE_ITO[0], OKABE_ITO[5], OKABE_ITO[1]
DIFFERENCE_COLOR = OKABE_ITO[0]
MARKER_COLOR = "#333333"
NO_SCORE_COLOR = "#eeeeee"
# Light-to-mid blues only, so the dark oracle/last-layer lines and the orange choice marker stay
# visible on every cell.
SCORE_CMAP = LinearSegmentedColormap.from_list("pifi_scores", ["#f7fbff", "#6baed6", "#2171b5"])
MAX_LAYER_TICKS = 17
# Selectors' raw scores have different units, so each row is scaled on its own and states its range.
SCORE_SCALE_LABEL = "score, scaled within each selector (0 = its lowest layer, 1 = its highest)"

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


def _flag(value) -> bool:
    """A CSV boolean that may be empty: NaN/None is False (bool(nan) would be True)."""
    return value is not None and not pd.isna(value) and bool(value)


def _number(value) -> float:
    """A CSV number that may be empty, as a float (NaN when empty)."""
    return math.nan if value is None or pd.isna(value) else float(value)


def _layer_ticks(num_layers: int) -> list[int]:
    step = max(1, math.ceil(num_layers / MAX_LAYER_TICKS))
    return list(range(0, num_layers, step))


def _right_column(ax: Axes, points: float, y: float, text: str, **kwargs) -> None:
    """Text ``points`` right of the plot's right edge at data ``y``: a table column beside the rows.

    An offset in points, not in axes fractions, so columns keep their spacing whatever the axes' width.
    """
    kwargs.setdefault("va", "center")
    edge = blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(1.0, y, text, transform=offset_copy(edge, fig=ax.figure, x=points, units="points"), clip_on=False,
            **kwargs)


# --- paired differences ("is it real") ----------------------------------------------------------

@dataclass(frozen=True)
class PairedDifference:
    """One row of the paired-difference figure: a − b in accuracy points with its 95% interval."""

    label: str
    difference: float
    low: float
    high: float
    significant: bool

    @property
    def text(self) -> str:
        """The value as printed next to the row, e.g. "+7.5 [+4.1, +11.0]"."""
        return f"{signed(self.difference)} [{signed(self.low)}, {signed(self.high)}]"


def _method_label(method: str, layer) -> str:
    if layer is None or pd.isna(layer) or str(layer) == "-":
        return method
    return f"{method} (layer {int(float(layer))})"


def _difference(label: str, difference, low, high, significant) -> PairedDifference:
    value = _number(difference)
    if not math.isfinite(value):
        raise ValueError(f"paired difference {label!r} has no value ({difference!r})")
    return PairedDifference(label=label, difference=100 * value, low=100 * _number(low),
                            high=100 * _number(high), significant=_flag(significant))


def _pair(comparisons: pd.DataFrame, a: str, b: str) -> pd.Series | None:
    match = comparisons[(comparisons["a"] == a) & (comparisons["b"] == b)]
    if len(match) > 1:
        raise ValueError(f"{len(match)} comparisons of {a} {MINUS} {b}: filter the table to one "
                         "dataset x SLM x LLM before plotting")
    return None if match.empty else match.iloc[0]


def _oracle_row(comparisons: pd.DataFrame, selectors: pd.DataFrame | None,
                layer_of: Mapping[str, object]) -> PairedDifference | None:
    """oracle − pifi_ilm: the regret of the selector that drives pifi_ilm; None without a sweep."""
    if selectors is not None and not selectors.empty:
        driver = selectors[selectors["drives_pifi_ilm"].map(_flag)]
        if len(driver) > 1:
            raise ValueError(f"{len(driver)} selectors drive pifi_ilm ({driver['selector'].tolist()}): "
                             "filter the selectors to one dataset x SLM x LLM before plotting")
        if len(driver) == 1 and math.isfinite(_number(driver["regret"].iloc[0])):
            row = driver.iloc[0]
            label = (f"{_method_label('oracle', row['oracle_layer'])} {MINUS} "
                     f"{_method_label('pifi_ilm', row['layer'])}")
            return _difference(label, row["regret"], row["regret_low"], row["regret_high"],
                               row["regret_significant"])
    row = _pair(comparisons, "pifi_oracle", "pifi_ilm")  # same numbers, when only the table has them
    if row is None:
        return None
    label = (f"{_method_label('oracle', layer_of.get('pifi_oracle'))} {MINUS} "
             f"{_method_label('pifi_ilm', layer_of.get('pifi_ilm'))}")
    return _difference(label, row["difference"], row["low"], row["high"], row["significant"])


def paired_difference_rows(comparisons: pd.DataFrame, *, layer_of: Mapping[str, object],
                           selectors: pd.DataFrame | None = None) -> list[PairedDifference]:
    """The rows of the paired-difference figure, in points, for one dataset x SLM x LLM.

    ``comparisons`` is that triple's part of comparisons.csv (a, b, difference, low, high,
    significant; fractions); ``layer_of`` maps method -> its plugged LLM layer (summary.csv's
    llm_layer, "-" for base); ``selectors`` is the triple's part of selectors.csv, whose driving
    selector's regret gives the oracle − pifi_ilm row (omitted when it is empty: no sweep).
    Pairs whose methods did not run are simply absent.
    """
    _require_columns(comparisons, COMPARISON_COLUMNS, "comparisons", "paired differences")
    if selectors is not None:
        _require_columns(selectors, SELECTOR_COLUMNS, "selectors", "paired differences")
    rows = []
    for a, b in PAIRS:
        row = _pair(comparisons, a, b)
        if row is not None:
            label = f"{_method_label(a, layer_of.get(a))} {MINUS} {_method_label(b, layer_of.get(b))}"
            rows.append(_difference(label, row["difference"], row["low"], row["high"], row["significant"]))
    oracle = _oracle_row(comparisons, selectors, layer_of)
    return rows + ([oracle] if oracle is not None else [])


def _difference_limits(rows: Sequence[PairedDifference]) -> tuple[float, float]:
    """x range holding 0 and every interval, with a margin."""
    values = [0.0] + [v for row in rows for v in (row.difference, row.low, row.high) if math.isfinite(v)]
    low, high = min(values), max(values)
    pad = max(1.0, 0.08 * (high - low))
    return low - pad, high + pad


def _draw_difference(ax: Axes, row: PairedDifference, position: int) -> None:
    # Errors clipped at 0: a percentile bootstrap interval may just miss its own point estimate.
    below = max(0.0, row.difference - row.low) if math.isfinite(row.low) else 0.0
    above = max(0.0, row.high - row.difference) if math.isfinite(row.high) else 0.0
    ax.errorbar(row.difference, position, xerr=[[below], [above]], fmt="o", capsize=5, markersize=8,
                color=DIFFERENCE_COLOR, markerfacecolor=DIFFERENCE_COLOR if row.significant else "white",
                markeredgewidth=1.5, elinewidth=1.5)
    _right_column(ax, 8, position, row.text + (" *" if row.significant else ""), ha="left",
                  fontweight="bold" if row.significant else "normal")


def _significance_legend(figure: Figure) -> None:
    style = {"marker": "o", "linestyle": "none", "markersize": 8, "color": DIFFERENCE_COLOR, "markeredgewidth": 1.5}
    handles = [Line2D([], [], markerfacecolor=DIFFERENCE_COLOR, label="* significant: the 95% interval excludes 0",
                      **style),
               Line2D([], [], markerfacecolor="white", label="not significant", **style)]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)


def plot_paired_differences(path: str | os.PathLike, *, title: str, rows: Sequence[PairedDifference]) -> None:
    """Write an SVG with one horizontal row per paired difference (points, 95% interval), top to bottom.

    A vertical line marks 0; a significant difference (interval excludes 0) has a filled marker and a
    bold value with a star. Without rows the figure says that a comparison needs two methods.
    """
    with _svg_style():
        figure = Figure(figsize=(8.5, 1.6 + 0.5 * max(1, len(rows))), layout="constrained")
        ax = figure.subplots()
        figure.suptitle(title)
        if not rows:
            ax.text(0.5, 0.5, "no paired comparison: needs two methods\n(e.g. base and pifi_ilm, or a sweep)",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            _save_svg(figure, path)
            return
        positions = list(range(len(rows)))[::-1]  # first row on top
        for row, position in zip(rows, positions):
            _draw_difference(ax, row, position)
        ax.axvline(0.0, color="black", linewidth=1.0)
        ax.set_yticks(positions, labels=[row.label for row in rows])
        for label, row in zip(ax.get_yticklabels(), rows):
            label.set_fontweight("bold" if row.significant else "normal")
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlim(*_difference_limits(rows))
        ax.set_xlabel("difference in test accuracy (points); bar and [brackets] = 95% paired bootstrap interval")
        _significance_legend(figure)
        _save_svg(figure, path)


# --- layer profile ("which layer") ---------------------------------------------------------------

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


def _finite_range(scores: Sequence[float] | None) -> tuple[float, float]:
    """(lowest, highest) of the finite scores; (NaN, NaN) when there are none."""
    values = np.asarray([] if scores is None else scores, dtype=np.float64)
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if values.size else (math.nan, math.nan)


@dataclass(frozen=True)
class SelectorRow:
    """One selector's row of the rank strip: normalised scores and their raw range, choice, stability, regret."""

    name: str
    scores: np.ndarray | None  # normalised, one per layer; None when the selector wrote no scores
    chosen: int | None
    drives: bool  # the selector whose choice is pifi_ilm's layer
    win_rate: float  # fraction of resampled selections the choice also won; NaN unknown
    regret: float  # oracle − chosen test accuracy in points; NaN without a sweep or untrained layer
    regret_significant: bool
    score_low: float = math.nan  # the raw scores' range, in the selector's own unit; NaN without scores
    score_high: float = math.nan

    @property
    def range_text(self) -> str:
        """The raw scores' range as printed beside the row, e.g. "0.25 to 0.5"; "-" without scores."""
        if not (math.isfinite(self.score_low) and math.isfinite(self.score_high)):
            return "-"
        if self.score_low == self.score_high:
            return f"{self.score_low:.4g} (constant)"
        return f"{self.score_low:.4g} to {self.score_high:.4g}"

    @property
    def win_rate_text(self) -> str:
        return "-" if not math.isfinite(self.win_rate) else f"{100 * self.win_rate:.0f}%"

    @property
    def regret_text(self) -> str:
        if not math.isfinite(self.regret):
            return "-"
        return signed(self.regret) + ("*" if self.regret_significant else "")


def selector_rows(selector_scores: Mapping[str, Sequence[float]], chosen: Mapping[str, int],
                  selectors: pd.DataFrame | None = None) -> list[SelectorRow]:
    """One row per selector: selectors.csv's order first, then selectors known only by their scores.

    ``selectors`` is the dataset x SLM x LLM's part of selectors.csv (win_rate, regret as fractions).
    """
    table = {} if selectors is None else {row["selector"]: row for row in selectors.to_dict("records")}
    names = list(dict.fromkeys([*table, *selector_scores, *chosen]))
    rows = []
    for name in names:
        row = table.get(name, {})
        scores = selector_scores.get(name)
        low, high = _finite_range(scores)
        rows.append(SelectorRow(name=name, scores=None if scores is None else normalized_scores(scores),
                                chosen=chosen.get(name), drives=_flag(row.get("drives_pifi_ilm")),
                                win_rate=_number(row.get("win_rate")), regret=100 * _number(row.get("regret")),
                                regret_significant=_flag(row.get("regret_significant")),
                                score_low=low, score_high=high))
    return rows


def _num_layers(selector_scores: Mapping[str, Sequence[float]], sweep: pd.DataFrame, last_layer: int,
                path) -> int:
    """L: the selectors' common score length, or (without scores) enough to show sweep and last layer."""
    lengths = {name: len(scores) for name, scores in selector_scores.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"selector scores for figure {os.fspath(path)!r} have different lengths {lengths}: "
                         "each must hold one score per LLM layer")
    if lengths:
        return next(iter(lengths.values()))
    swept = [int(layer) for layer in sweep["layer"]]
    return max([last_layer, *swept]) + 1


def _check_layers(chosen: Mapping[str, int], num_layers: int, path) -> None:
    for name, layer in chosen.items():
        if not 0 <= layer < num_layers:
            raise ValueError(f"selector {name!r} chose layer {layer}, outside 0..{num_layers - 1} "
                             f"(figure {os.fspath(path)!r})")


def _mark_layers(ax: Axes, oracle_layer: int | None, last_layer: int, *, labelled: bool) -> None:
    """Oracle (dashed) and last layer (dotted) as vertical lines; labelled once, for the legend."""
    if oracle_layer is not None:
        ax.axvline(oracle_layer, color=MARKER_COLOR, linestyle="--", linewidth=1.3,
                   label=f"oracle: layer {oracle_layer} (best validation)" if labelled else None)
    ax.axvline(last_layer, color=MARKER_COLOR, linestyle=":", linewidth=1.3,
               label=f"last layer ({last_layer})" if labelled else None)


def _plot_accuracy_band(ax: Axes, sweep: pd.DataFrame, prefix: str, label: str, color: str) -> None:
    layers = sweep["layer"].to_numpy()
    ax.fill_between(layers, 100 * sweep[f"{prefix}_low"].to_numpy(dtype=float),
                    100 * sweep[f"{prefix}_high"].to_numpy(dtype=float), color=color, alpha=0.2, linewidth=0)
    ax.plot(layers, 100 * sweep[f"{prefix}_mean"].to_numpy(dtype=float), color=color, marker="o",
            markersize=4, label=label)


def _chosen_handle() -> Line2D:
    return Line2D([], [], marker="D", linestyle="none", markersize=7, markerfacecolor=CHOSEN_COLOR,
                  markeredgecolor="black", label="layer the selector chose")


def _plot_sweep_panel(ax: Axes, sweep: pd.DataFrame, oracle_layer: int | None, last_layer: int) -> None:
    sweep = sweep.sort_values("layer")
    _plot_accuracy_band(ax, sweep, "val", "validation (mean over seeds, 95% CI)", VALIDATION_COLOR)
    _plot_accuracy_band(ax, sweep, "test", "test (mean over seeds, 95% CI)", TEST_COLOR)
    _mark_layers(ax, oracle_layer, last_layer, labelled=True)
    at_oracle = sweep.loc[sweep["layer"] == oracle_layer, "val_mean"] if oracle_layer is not None else []
    if len(at_oracle):
        ax.plot([oracle_layer], [100 * float(at_oracle.iloc[0])], marker="*", markersize=15,
                color=VALIDATION_COLOR, markeredgecolor="black", linestyle="none")
    ax.set_title("PiFi accuracy per plugged LLM layer (sweep)", fontsize=10, loc="left")
    ax.set_ylabel("accuracy (%)")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, _chosen_handle()], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


NO_SWEEP_NOTE = "no layer sweep in this run (method pifi_sweep not run): no accuracy per layer, no oracle, no regret"


def _no_sweep_legend(figure: Figure, last_layer: int) -> None:
    """Without the sweep panel (whose legend explains the strip's marks), the marks' legend goes below."""
    handles = [Line2D([], [], color=MARKER_COLOR, linestyle=":", linewidth=1.3, label=f"last layer ({last_layer})"),
               _chosen_handle()]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)


def _plot_rank_strip(ax: Axes, rows: Sequence[SelectorRow], num_layers: int, oracle_layer: int | None,
                     last_layer: int, *, show_regret: bool, note: str | None = None) -> QuadMesh | None:
    """One row per selector: its normalised scores as a heat strip, its choice as a diamond, its stats right.

    Returns the heat strip's mesh (for the colour bar), None when no selector has scores.
    """
    ax.grid(False)
    ax.set_facecolor(NO_SCORE_COLOR)  # masked cells: no score for that layer
    title = "Selector scores per layer (colour scaled within each selector; its raw score range at right)"
    # lifted above the two-line column headers, so that a long title cannot run into them
    ax.set_title(title if note is None else f"{title}\n{note}", fontsize=10, loc="left", pad=26 if rows else 6)
    if not rows:
        ax.text(0.5, 0.5, "no selector scores", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return None
    matrix = np.full((len(rows), num_layers), np.nan)
    for index, row in enumerate(rows):
        if row.scores is not None:
            matrix[index] = row.scores
    mesh = ax.pcolormesh(np.arange(num_layers + 1) - 0.5, np.arange(len(rows) + 1) - 0.5,
                         np.ma.masked_invalid(matrix), cmap=SCORE_CMAP, vmin=0.0, vmax=1.0)
    for index in range(1, len(rows)):  # white gaps keep neighbouring rows apart
        ax.axhline(index - 0.5, color="white", linewidth=2)
    _mark_layers(ax, oracle_layer, last_layer, labelled=False)
    for index, row in enumerate(rows):
        if row.chosen is not None:
            ax.plot([row.chosen], [index], marker="D", markersize=7, markerfacecolor=CHOSEN_COLOR,
                    markeredgecolor="black", linestyle="none")
        _stats_columns(ax, index, row, show_regret=show_regret)
    _stats_header(ax, show_regret=show_regret)
    ax.set_yticks(range(len(rows)), labels=[f"{row.name} (pifi_ilm)" if row.drives else row.name for row in rows])
    for label, row in zip(ax.get_yticklabels(), rows):
        label.set_fontweight("bold" if row.drives else "normal")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first selector on top
    return mesh if any(row.scores is not None for row in rows) else None


# centres of the stats columns right of the strip, in points from its right edge; the score range,
# whose width varies, is left-aligned last so that it cannot run into a column after it
_CHOSE_X, _WIN_X, _REGRET_X = 22, 68, 134
_RANGE_X = {True: 184, False: 100}  # by show_regret


def _stats_columns(ax: Axes, index: int, row: SelectorRow, *, show_regret: bool) -> None:
    weight = "bold" if row.drives else "normal"
    _right_column(ax, _CHOSE_X, index, "-" if row.chosen is None else str(row.chosen), ha="center",
                  fontweight=weight)
    _right_column(ax, _WIN_X, index, row.win_rate_text, ha="center", fontweight=weight)
    if show_regret:
        _right_column(ax, _REGRET_X, index, row.regret_text, ha="center", fontweight=weight)
    _right_column(ax, _RANGE_X[show_regret], index, row.range_text, ha="left", fontsize=8)


def _stats_header(ax: Axes, *, show_regret: bool) -> None:
    regret = [(_REGRET_X, "regret (pts)\n* = CI excludes 0")] if show_regret else []
    headers = [(_CHOSE_X, "layer"), (_WIN_X, "win rate"), *regret]
    for x, text in headers:
        _right_column(ax, x, -0.6, text, ha="center", va="bottom", fontsize=8, color=MARKER_COLOR)
    _right_column(ax, _RANGE_X[show_regret], -0.6, "raw score range\n(own unit)", ha="left", va="bottom",
                  fontsize=8, color=MARKER_COLOR)


def _score_colorbar(figure: Figure, ax: Axes, mesh: QuadMesh) -> None:
    bar = figure.colorbar(mesh, ax=ax, location="bottom", shrink=0.5, aspect=40, pad=0.02)
    bar.set_ticks([0.0, 0.5, 1.0])
    bar.set_label(SCORE_SCALE_LABEL, fontsize=8)
    bar.ax.tick_params(labelsize=8)


def plot_layer_profile(path: str | os.PathLike, *, title: str, sweep: pd.DataFrame,
                       selector_scores: Mapping[str, Sequence[float]], chosen: Mapping[str, int],
                       oracle_layer: int | None, last_layer: int, selectors: pd.DataFrame | None = None) -> None:
    """Write an SVG: the sweep's accuracy per plugged layer (top) over a rank strip of the selectors.

    ``sweep`` has one row per swept layer with columns layer, val_mean, val_low, val_high,
    test_mean, test_low, test_high (fractions; low/high bound the 95% interval); when it is empty
    (no sweep ran) there is no top panel and the strip's title says why. ``selector_scores`` maps
    selector name -> one score per layer (higher = better), drawn scaled within each selector (their
    units differ) with the raw range beside each row; ``chosen`` maps selector name -> the layer it
    picked; ``selectors`` is the dataset x SLM x LLM's part of selectors.csv, for each row's win rate,
    regret and which selector drives pifi_ilm (bold). Layers share one x axis across both panels.
    """
    _require_columns(sweep, SWEEP_COLUMNS, "sweep", path)
    if selectors is not None:
        _require_columns(selectors, SELECTOR_COLUMNS, "selectors", path)
    num_layers = _num_layers(selector_scores, sweep, last_layer, path)
    _check_layers(chosen, num_layers, path)
    rows = selector_rows(selector_scores, chosen, selectors)
    has_sweep = not sweep.empty
    strip = 0.5 + 0.3 * max(1, len(rows))
    # title, x label and colour bar; without a sweep also the note and the legend below
    extra = 1.6 if has_sweep else 2.0
    with _svg_style():
        if has_sweep:
            top = 3.0
            figure = Figure(figsize=(10.0, top + strip + extra), layout="constrained")
            sweep_ax, strip_ax = figure.subplots(2, 1, sharex=True, height_ratios=[top, strip])
            _plot_sweep_panel(sweep_ax, sweep, oracle_layer, last_layer)
        else:  # no empty panel: the strip alone
            figure = Figure(figsize=(10.0, strip + extra), layout="constrained")
            strip_ax = figure.subplots()
            _no_sweep_legend(figure, last_layer)
        mesh = _plot_rank_strip(strip_ax, rows, num_layers, oracle_layer if has_sweep else None, last_layer,
                                show_regret=has_sweep, note=None if has_sweep else NO_SWEEP_NOTE)
        strip_ax.set_xlabel("LLM layer index")
        strip_ax.set_xticks(_layer_ticks(num_layers))
        strip_ax.set_xlim(-0.5, num_layers - 0.5)
        if mesh is not None:
            _score_colorbar(figure, strip_ax, mesh)
        figure.suptitle(title)
        _save_svg(figure, path)


# --- selectors x datasets ("which selector picks well") ------------------------------------------

REGRET_COLUMNS = ("dataset", "slm", "llm", "selector", "drives_pifi_ilm", "regret", "regret_significant")
MEAN_COLUMN = "mean"
NO_REGRET_COLOR = "#bdbdbd"  # mid grey: apart from the white of 0 regret on the diverging map
# Diverging, white at 0 (as good as the oracle): red = worse than the oracle, blue = better on test.
REGRET_CMAP = "RdBu_r"


@dataclass(frozen=True)
class RegretMatrix:
    """Regret in points, one row per selector (best mean first), one column per triple then the mean."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]  # "dataset" or "dataset / slm / llm", then MEAN_COLUMN
    values: np.ndarray  # rows x columns, points; NaN = no regret (the chosen layer was not trained)
    significant: np.ndarray  # bool, same shape; never set in the mean column
    counts: tuple[int, ...]  # per row: how many cells the mean is over
    drives: tuple[bool, ...]  # per row: the selector that drives pifi_ilm

    @property
    def has_regret(self) -> bool:
        return bool(np.isfinite(self.values).any())

    def text(self, row: int, column: int) -> str:
        """A cell's printed value: "+4.2", "+4.2*" when significant, "-" without a value; the mean
        says how many cells it is over when some are missing ("+4.2 (n=2)")."""
        value = self.values[row, column]
        if not math.isfinite(value):
            return "-"
        text = signed(value)
        if column == len(self.columns) - 1:
            datasets = len(self.columns) - 1
            return text if self.counts[row] == datasets else f"{text} (n={self.counts[row]})"
        return text + ("*" if self.significant[row, column] else "")


def _triple_labels(triples: Sequence[tuple[str, str, str]]) -> list[str]:
    """The dataset alone when every triple shares one SLM and one LLM, else "dataset / slm / llm"."""
    if len({(slm, llm) for _, slm, llm in triples}) <= 1:
        return [dataset for dataset, _, _ in triples]
    return [" / ".join(triple) for triple in triples]


def selector_regret_matrix(selectors: pd.DataFrame) -> RegretMatrix:
    """selectors.csv (all triples; regret as fractions) as the selectors x datasets regret matrix.

    Columns keep the table's order of triples; rows are sorted by mean regret over the cells that
    have one (ascending, so the best selector is first; ties keep the table's order; selectors
    without any regret last).
    """
    _require_columns(selectors, REGRET_COLUMNS, "selectors", "selectors x datasets")
    keys = ["dataset", "slm", "llm", "selector"]
    repeated = selectors[selectors.duplicated(keys, keep=False)]
    if not repeated.empty:
        raise ValueError(f"selectors table has repeated rows for {repeated[keys].drop_duplicates().values.tolist()}")
    triples = list(dict.fromkeys(zip(selectors["dataset"], selectors["slm"], selectors["llm"])))
    names = list(dict.fromkeys(selectors["selector"]))
    values = np.full((len(names), len(triples) + 1), np.nan)
    significant = np.zeros(values.shape, dtype=bool)
    drives = dict.fromkeys(names, False)
    for record in selectors.to_dict("records"):
        row = names.index(record["selector"])
        column = triples.index((record["dataset"], record["slm"], record["llm"]))
        values[row, column] = 100 * _number(record["regret"])
        significant[row, column] = math.isfinite(values[row, column]) and _flag(record["regret_significant"])
        drives[record["selector"]] |= _flag(record["drives_pifi_ilm"])
    counts = np.isfinite(values[:, :-1]).sum(axis=1)
    # the mean over the cells that have a regret; a row without any stays NaN
    values[:, -1] = np.where(counts > 0, np.nansum(values[:, :-1], axis=1) / np.maximum(counts, 1), np.nan)
    means = values[:, -1]
    # best (lowest) mean first; NaN means last; sorted() is stable, so ties keep the table's order
    order = sorted(range(len(names)), key=lambda i: (not math.isfinite(means[i]), np.nan_to_num(means[i])))
    return RegretMatrix(rows=tuple(names[i] for i in order), columns=(*_triple_labels(triples), MEAN_COLUMN),
                        values=values[order], significant=significant[order],
                        counts=tuple(int(counts[i]) for i in order), drives=tuple(drives[names[i]] for i in order))


def _regret_limit(values: np.ndarray) -> float:
    """Symmetric colour range around 0, at least ±1 point so that tiny regrets stay pale."""
    finite = np.abs(values[np.isfinite(values)])
    return max(1.0, float(finite.max())) if finite.size else 1.0


def _draw_regret_cells(ax: Axes, matrix: RegretMatrix, norm: Normalize) -> None:
    for row in range(len(matrix.rows)):
        for column in range(len(matrix.columns)):
            value = matrix.values[row, column]
            # white text on the dark ends of the map, black elsewhere (and on the grey "-")
            dark = math.isfinite(value) and abs(norm(value) - 0.5) > 0.3
            ax.text(column, row, matrix.text(row, column), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black",
                    fontweight="bold" if column == len(matrix.columns) - 1 else "normal")


def _regret_figsize(matrix: RegretMatrix) -> tuple[float, float]:
    """Width for the cells plus the slanted column labels (the last one juts out right), height per row."""
    longest = max(len(label) for label in matrix.columns)
    return 3.0 + 1.1 * len(matrix.columns) + 0.04 * longest, 2.0 + 0.32 * max(1, len(matrix.rows))


def _draw_regret_map(figure: Figure, ax: Axes, matrix: RegretMatrix) -> None:
    limit = _regret_limit(matrix.values)
    norm = Normalize(vmin=-limit, vmax=limit)
    rows, columns = len(matrix.rows), len(matrix.columns)
    ax.grid(False)
    ax.set_facecolor(NO_REGRET_COLOR)  # masked cells: no regret
    mesh = ax.pcolormesh(np.arange(columns + 1) - 0.5, np.arange(rows + 1) - 0.5,
                         np.ma.masked_invalid(matrix.values), cmap=REGRET_CMAP, norm=norm)
    for index in range(1, rows):  # white gaps keep neighbouring cells apart
        ax.axhline(index - 0.5, color="white", linewidth=1.5)
    for index in range(1, columns):
        ax.axvline(index - 0.5, color="white", linewidth=4 if index == columns - 1 else 1.5)  # mean set apart
    _draw_regret_cells(ax, matrix, norm)
    ax.set_xticks(range(columns), labels=matrix.columns, rotation=30, ha="left", rotation_mode="anchor")
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_yticks(range(rows), labels=[f"{name} (pifi_ilm)" if drives else name
                                       for name, drives in zip(matrix.rows, matrix.drives)])
    for label, drives in zip(ax.get_yticklabels(), matrix.drives):
        label.set_fontweight("bold" if drives else "normal")
    ax.get_xticklabels()[-1].set_fontweight("bold")
    ax.set_ylim(rows - 0.5, -0.5)  # best selector on top
    ax.set_xlim(-0.5, columns - 0.5)
    ax.set_xlabel(f"regret = oracle {MINUS} selector's layer, test accuracy in points (0 = as good as the oracle)\n"
                  "* = 95% paired interval excludes 0;  - (grey) = the selector's layer was not trained",
                  fontsize=8)
    bar = figure.colorbar(mesh, ax=ax, shrink=0.8, pad=0.02)
    bar.ax.axhline(0.0, color="black", linewidth=1.5)  # 0 marked on the scale, not just by white
    bar.set_label("regret (points)")


def plot_selector_regret(path: str | os.PathLike, *, selectors: pd.DataFrame, title: str) -> None:
    """Write an SVG heat map: one row per selector, one column per dataset (x SLM x LLM) and the mean.

    ``selectors`` is the whole selectors.csv (regret as fractions). A cell is the selector's regret in
    points (oracle minus the selector's layer's test accuracy; 0 = as good as the oracle), "*" when its 95%
    paired interval excludes 0, grey "-" when the chosen layer was not trained. The bold row is the
    selector that drives pifi_ilm. Without any regret (no sweep) the figure says so.
    """
    matrix = selector_regret_matrix(selectors)
    with _svg_style():
        figure = Figure(figsize=_regret_figsize(matrix) if matrix.has_regret else (6.0, 1.6), layout="constrained")
        ax = figure.subplots()
        figure.suptitle(title)
        if not matrix.has_regret:
            ax.text(0.5, 0.5, "no sweep: no regret to show\n(regret needs method pifi_sweep)", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_axis_off()
            _save_svg(figure, path)
            return
        _draw_regret_map(figure, ax, matrix)
        _save_svg(figure, path)
