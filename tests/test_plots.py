"""The report figures: the right rows and numbers, valid SVG with readable text, deterministic bytes,
nothing left on error."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from pifi.plots import (PairedDifference, normalized_scores, paired_difference_rows, plot_layer_profile,
                        plot_paired_differences, plot_selector_regret, selector_regret_matrix, selector_rows)

matplotlib.use("Agg")

SVG_NAMESPACE = "{http://www.w3.org/2000/svg}"
NUM_LAYERS = 8
MINUS = "\u2212"
# The project's eleven selectors, ilm_pc_patching driving pifi_ilm.
SELECTORS = ("ilm_pc_patching", "probe_cv", "fisher", "silhouette", "mdl", "logme", "ilm_v2", "first", "last",
             "middle", "plugin_probe")
LAYER_OF = {"base": "-", "pifi_last": "7", "pifi_ilm": "4", "pifi_oracle": "2"}


def _texts(path: Path) -> list[str]:
    """The text of each <text> element; parsing it also proves the file is valid SVG."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG_NAMESPACE}svg"
    return ["".join(element.itertext()) for element in root.iter(f"{SVG_NAMESPACE}text")]


def _svg_texts(path: Path) -> str:
    return "\n".join(_texts(path))


def _text_elements(path: Path) -> dict[str, ET.Element]:
    return {"".join(e.itertext()): e for e in ET.parse(path).getroot().iter(f"{SVG_NAMESPACE}text")}


def _text_heights(path: Path) -> dict[str, float]:
    """The y coordinate of each <text> element, by its text."""
    return {text: float(e.get("y")) for text, e in _text_elements(path).items() if e.get("y")}


def _is_bold(path: Path, text: str) -> bool:
    return "font-weight: 700" in (_text_elements(path)[text].get("style") or "")


def _svg_height(path: Path) -> float:
    return float(ET.parse(path).getroot().get("height").removesuffix("pt"))


# --- inputs -------------------------------------------------------------------------------------

def _sweep() -> pd.DataFrame:
    layers = np.array([0, 2, 4, 6])
    val = np.array([0.70, 0.81, 0.78, 0.75])
    test = val - 0.01
    return pd.DataFrame({"layer": layers, "val_mean": val, "val_low": val - 0.02, "val_high": val + 0.02,
                         "test_mean": test, "test_low": test - 0.02, "test_high": test + 0.02})


def _selector_scores(names=SELECTORS) -> dict[str, list[float]]:
    """A different score profile per selector; each peaks at layer index % NUM_LAYERS."""
    return {name: [-abs(layer - index % NUM_LAYERS) for layer in range(NUM_LAYERS)]
            for index, name in enumerate(names)}


def _chosen(names=SELECTORS) -> dict[str, int]:
    return {name: index % NUM_LAYERS for index, name in enumerate(names)}


def _selectors(names=SELECTORS, *, sweep: bool = True) -> pd.DataFrame:
    """selectors.csv's rows for one dataset x SLM x LLM; regret empty without a sweep, as the summary writes it."""
    n = len(names)
    regret = [0.01 * index for index in range(n)] if sweep else [math.nan] * n
    return pd.DataFrame({
        "selector": list(names), "drives_pifi_ilm": [name == "ilm_pc_patching" for name in names],
        "layer": [index % NUM_LAYERS for index in range(n)],
        "win_rate": [0.6] + [math.nan] + [0.1] * (n - 2) if n > 1 else [0.6],
        "oracle_layer": [2.0 if sweep else math.nan] * n, "regret": regret,
        "regret_low": [r - 0.01 for r in regret], "regret_high": [r + 0.01 for r in regret],
        "regret_significant": [r - 0.01 > 0 if sweep else math.nan for r in regret]})


def _comparisons() -> pd.DataFrame:
    """The demo run's sentiment comparisons (fractions), plus the sweep's oracle row."""
    return pd.DataFrame({"a": ["pifi_ilm", "pifi_ilm", "pifi_last", "pifi_oracle"],
                         "b": ["base", "pifi_last", "base", "pifi_ilm"],
                         "difference": [-0.026, 0.075, -0.101, 0.04], "low": [-0.088, 0.040975, -0.166, 0.02],
                         "high": [0.038, 0.11, -0.03, 0.06], "significant": [False, True, True, True]})


def _profile(path: Path, **overrides) -> None:
    arguments = {"title": "sst2 / tiny-bert / tiny-llama", "sweep": _sweep(),
                 "selector_scores": _selector_scores(), "chosen": _chosen(), "oracle_layer": 2,
                 "last_layer": NUM_LAYERS - 1, "selectors": _selectors()}
    plot_layer_profile(path, **{**arguments, **overrides})


# --- paired differences -------------------------------------------------------------------------

def test_paired_difference_rows_carry_the_comparisons_in_points():
    rows = paired_difference_rows(_comparisons(), layer_of=LAYER_OF, selectors=_selectors(sweep=False))
    assert [row.label for row in rows] == [f"pifi_ilm (layer 4) {MINUS} base",
                                           f"pifi_ilm (layer 4) {MINUS} pifi_last (layer 7)",
                                           f"pifi_last (layer 7) {MINUS} base",
                                           f"oracle (layer 2) {MINUS} pifi_ilm (layer 4)"]
    np.testing.assert_allclose([(r.difference, r.low, r.high) for r in rows],
                               [(-2.6, -8.8, 3.8), (7.5, 4.0975, 11.0), (-10.1, -16.6, -3.0), (4.0, 2.0, 6.0)])
    assert [row.significant for row in rows] == [False, True, True, True]
    assert rows[1].text == "+7.5 [+4.1, +11.0]"


def test_oracle_row_is_the_driving_selectors_regret():
    selectors = _selectors()  # ilm_pc_patching drives: regret 0.00 [-0.01, +0.01]; others have larger ones
    regret = ["layer", "regret", "regret_low", "regret_high", "regret_significant"]
    selectors.loc[0, regret] = [5, 0.05, 0.01, 0.09, True]
    rows = paired_difference_rows(_comparisons().iloc[:3], layer_of=LAYER_OF, selectors=selectors)
    oracle = rows[-1]
    assert oracle == PairedDifference(label=f"oracle (layer 2) {MINUS} pifi_ilm (layer 5)",
                                      difference=pytest.approx(5.0), low=pytest.approx(1.0),
                                      high=pytest.approx(9.0), significant=True)


def test_no_oracle_row_without_a_sweep():
    rows = paired_difference_rows(_comparisons().iloc[:3], layer_of=LAYER_OF, selectors=_selectors(sweep=False))
    assert len(rows) == 3 and not any(row.label.startswith("oracle") for row in rows)


def test_missing_methods_leave_their_rows_out():
    only = _comparisons().iloc[[1]]  # pifi_ilm − pifi_last: a project without base or sweep
    rows = paired_difference_rows(only, layer_of={"pifi_last": "7", "pifi_ilm": "4"})
    assert [row.label for row in rows] == [f"pifi_ilm (layer 4) {MINUS} pifi_last (layer 7)"]
    assert paired_difference_rows(_comparisons().iloc[0:0], layer_of={}) == []


def test_comparisons_of_several_triples_are_refused():
    twice = pd.concat([_comparisons(), _comparisons()])
    with pytest.raises(ValueError, match="one dataset x SLM x LLM"):
        paired_difference_rows(twice, layer_of=LAYER_OF)


def test_paired_difference_figure_rows_values_and_marks(tmp_path):
    path = tmp_path / "methods.svg"
    rows = paired_difference_rows(_comparisons(), layer_of=LAYER_OF)
    plot_paired_differences(path, title="sst2: paired differences", rows=rows)
    texts = _svg_texts(path)
    assert "sst2: paired differences" in texts
    assert "+7.5 [+4.1, +11.0] *" in texts  # significant: value with a star
    assert "-2.6 [-8.8, +3.8]" in texts and "-2.6 [-8.8, +3.8] *" not in texts
    assert "significant: the 95% interval excludes 0" in texts  # the legend says what the mark means
    labels = [row.label for row in rows]
    assert _is_bold(path, labels[1]) and not _is_bold(path, labels[0])
    # First row on top: SVG y grows downwards, so the labels' y must increase in the given order.
    heights = _text_heights(path)
    assert [heights[label] for label in labels] == sorted(heights[label] for label in labels)


def test_paired_difference_figure_without_rows_says_why(tmp_path):
    path = tmp_path / "methods.svg"
    plot_paired_differences(path, title="t", rows=[])
    assert "no paired comparison: needs two methods" in _svg_texts(path)


def test_bad_comparison_column_raises():
    with pytest.raises(ValueError, match="significant"):
        paired_difference_rows(_comparisons().drop(columns="significant"), layer_of=LAYER_OF)


# --- layer profile ------------------------------------------------------------------------------

def test_selector_rows_order_stats_and_score_less_selectors():
    selectors = _selectors(("ilm_pc_patching", "probe_cv", "plugin_probe"))
    scores = _selector_scores(("probe_cv", "ilm_pc_patching", "fisher"))
    rows = selector_rows(scores, {"ilm_pc_patching": 0, "probe_cv": 1, "plugin_probe": 2, "fisher": 3}, selectors)
    # selectors.csv's order first, then those with scores only
    assert [row.name for row in rows] == ["ilm_pc_patching", "probe_cv", "plugin_probe", "fisher"]
    assert [row.drives for row in rows] == [True, False, False, False]
    assert [row.win_rate_text for row in rows] == ["60%", "-", "10%", "-"]
    assert [row.regret_text for row in rows] == ["+0.0", "+1.0", "+2.0*", "-"]
    assert rows[2].scores is None and rows[3].chosen == 3
    np.testing.assert_allclose(rows[0].scores, normalized_scores(scores["ilm_pc_patching"]))


def test_layer_profile_with_eleven_selectors_and_a_sweep(tmp_path):
    path = tmp_path / "profile.svg"
    _profile(path)
    texts = _svg_texts(path)
    assert "sst2 / tiny-bert / tiny-llama" in texts
    assert all(name in texts for name in SELECTORS)
    assert _is_bold(path, "ilm_pc_patching (pifi_ilm)") and not _is_bold(path, "probe_cv")
    assert "oracle: layer 2 (best validation)" in texts and "last layer (7)" in texts
    assert "validation" in texts and "LLM layer index" in texts and "regret (pts)" in texts
    assert "+10.0*" in texts  # plugin_probe's regret 0.10 [0.09, 0.11], significant
    heights = _text_heights(path)  # one row per selector, first on top
    assert [heights[name] for name in SELECTORS[1:]] == sorted(heights[name] for name in SELECTORS[1:])


def test_layer_profile_grows_with_the_number_of_selectors(tmp_path):
    _profile(tmp_path / "two.svg", selector_scores=_selector_scores(SELECTORS[:2]), chosen=_chosen(SELECTORS[:2]),
             selectors=_selectors(SELECTORS[:2]))
    _profile(tmp_path / "eleven.svg")
    assert _svg_height(tmp_path / "eleven.svg") > _svg_height(tmp_path / "two.svg") + 100


def test_layer_profile_without_sweep_says_so(tmp_path):
    path = tmp_path / "profile.svg"
    _profile(path, sweep=_sweep().iloc[0:0], oracle_layer=None, selectors=_selectors(sweep=False))
    texts = _svg_texts(path)
    assert "no layer sweep in this run" in texts
    assert all(name in texts for name in SELECTORS[1:]) and "ilm_pc_patching (pifi_ilm)" in texts
    assert "validation" not in texts and "oracle: layer" not in texts and "regret (pts)" not in texts
    assert "last layer (7)" in texts  # the strip's markers are still explained


def _drawn_figure(monkeypatch, path: Path, **overrides):
    """The Figure that plot_layer_profile saves, for its axes and colour data."""
    import pifi.plots

    drawn, save = [], pifi.plots._save_svg
    monkeypatch.setattr(pifi.plots, "_save_svg", lambda figure, target: (drawn.append(figure), save(figure, target)))
    _profile(path, **overrides)
    return drawn[-1]


def _panels(figure) -> list:
    """The figure's axes other than colour bars."""
    return [ax for ax in figure.axes if not hasattr(ax, "_colorbar")]


def test_layer_profile_without_sweep_draws_no_empty_panel(tmp_path, monkeypatch):
    no_sweep = {"sweep": _sweep().iloc[0:0], "oracle_layer": None, "selectors": _selectors(sweep=False)}
    figure = _drawn_figure(monkeypatch, tmp_path / "no_sweep.svg", **no_sweep)
    panels = _panels(figure)
    assert len(panels) == 1  # the selector strip alone
    assert all(ax.collections or ax.lines for ax in panels)  # every panel draws data
    with_sweep = _drawn_figure(monkeypatch, tmp_path / "sweep.svg")
    assert len(_panels(with_sweep)) == 2
    # no space kept for the missing panel: shorter by about the sweep panel's 3 inches
    assert with_sweep.get_figheight() - figure.get_figheight() > 2.5
    assert _svg_height(tmp_path / "sweep.svg") - _svg_height(tmp_path / "no_sweep.svg") > 150


def _scores_in_different_units() -> dict[str, list[float]]:
    scores = _selector_scores(SELECTORS[:3])
    scores["fisher"] = [1000.0 * score + 250.0 for score in scores["fisher"]]  # another unit altogether
    return scores


def test_layer_profile_rows_span_the_colour_scale_and_state_their_range(tmp_path, monkeypatch):
    path = tmp_path / "profile.svg"
    names = SELECTORS[:3]
    scores = _scores_in_different_units()
    figure = _drawn_figure(monkeypatch, path, selector_scores=scores, chosen=_chosen(names),
                           selectors=_selectors(names))
    strip = next(ax for ax in _panels(figure) if ax.get_title(loc="left").startswith("Selector scores"))
    colours = np.ma.filled(strip.collections[0].get_array().reshape(len(names), NUM_LAYERS), np.nan)
    np.testing.assert_allclose(np.nanmin(colours, axis=1), 0.0)  # each row runs from 0 (its lowest layer)...
    np.testing.assert_allclose(np.nanmax(colours, axis=1), 1.0)  # ...to 1 (its highest)
    texts, heights = _svg_texts(path), _text_heights(path)
    assert "score, scaled within each selector (0 = its lowest layer, 1 = its highest)" in texts
    # each row says its raw range, on the row's own line
    ranges = {"ilm_pc_patching": "-7 to 0", "probe_cv": "-6 to 0", "fisher": "-4750 to 250"}
    for name, text in ranges.items():
        label = "ilm_pc_patching (pifi_ilm)" if name == "ilm_pc_patching" else name
        assert heights[text] == pytest.approx(heights[label], abs=3), name
    assert "raw score range" in texts


def test_layer_profile_range_of_score_less_and_constant_selectors(tmp_path):
    rows = selector_rows({"last": [1.0] * NUM_LAYERS, "probe_cv": [0.5, np.nan, 0.25]}, {"plugin_probe": 2},
                         _selectors(("plugin_probe",)))
    assert {row.name: row.range_text for row in rows} == {"plugin_probe": "-", "last": "1 (constant)",
                                                          "probe_cv": "0.25 to 0.5"}


def test_layer_profile_with_nan_win_rates_and_no_selectors_table(tmp_path):
    selectors = _selectors()
    selectors["win_rate"] = math.nan
    path = tmp_path / "profile.svg"
    _profile(path, selectors=selectors)
    texts = _texts(path)
    assert not [text for text in texts if re.fullmatch(r"\d+%", text)]  # no win rate printed...
    assert texts.count("-") >= len(SELECTORS)  # ...but a dash in every row
    _profile(tmp_path / "bare.svg", selectors=None)  # scores alone: names, no stats
    assert "probe_cv" in _svg_texts(tmp_path / "bare.svg")


def test_layer_profile_with_constant_scores(tmp_path):
    path = tmp_path / "profile.svg"
    _profile(path, selector_scores={"last": [1.0] * NUM_LAYERS}, chosen={"last": NUM_LAYERS - 1}, selectors=None)
    assert "last" in _texts(path)


def test_normalized_scores_min_max_constant_and_nan():
    np.testing.assert_allclose(normalized_scores([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(normalized_scores([3.0, 3.0]), [0.5, 0.5])
    np.testing.assert_array_equal(normalized_scores([1.0, np.nan, 3.0]), [0.0, np.nan, 1.0])


# --- selectors x datasets -------------------------------------------------------------------------

def _regret_table(regrets: dict[str, list[float]], *, datasets=("cola", "imdb"), slm="minilm", llm="smollm2",
                  significant: dict[str, list[bool]] | None = None) -> pd.DataFrame:
    """selectors.csv for several triples: regret (fractions) per selector and dataset, NaN = untrained layer."""
    significant = significant or {}
    rows = []
    for index, dataset in enumerate(datasets):
        for name, values in regrets.items():
            flags = significant.get(name, [False] * len(datasets))
            regret = values[index]
            rows.append({"dataset": dataset, "slm": slm, "llm": llm, "selector": name,
                         "drives_pifi_ilm": name == "ilm_pc_patching", "layer": 3, "oracle_layer": 2,
                         "regret": regret, "regret_low": regret - 0.01, "regret_high": regret + 0.01,
                         "regret_significant": math.nan if math.isnan(regret) else flags[index]})
    return pd.DataFrame(rows)


def _leaderboard_like() -> pd.DataFrame:
    """Four datasets, the eleven selectors, gaps where a selector's layer was not trained (as in leaderboard/)."""
    regrets = {name: [0.01 * ((index * 7 + d * 3) % 12) for d in range(4)] for index, name in enumerate(SELECTORS)}
    regrets["probe_cv"] = [math.nan] * 4
    regrets["logme"] = [math.nan, math.nan, math.nan, 0.035]
    regrets["middle"] = [-0.01, 0.118, 0.017, 0.073]
    return _regret_table(regrets, datasets=("cola_real", "imdb_real", "sst2_real", "tweet_offensive_real"),
                         significant={"last": [False, True, False, False]})


def test_regret_matrix_in_points_with_a_mean_column():
    matrix = selector_regret_matrix(_regret_table({"ilm_pc_patching": [0.04, 0.02], "first": [0.0, 0.01]}))
    assert matrix.columns == ("cola", "imdb", "mean")
    assert matrix.rows == ("first", "ilm_pc_patching")
    np.testing.assert_allclose(matrix.values, [[0.0, 1.0, 0.5], [4.0, 2.0, 3.0]])
    assert matrix.drives == (False, True)
    assert [matrix.text(1, column) for column in range(3)] == ["+4.0", "+2.0", "+3.0"]


def test_regret_matrix_rows_best_mean_first_ties_in_table_order_empty_last():
    regrets = {"a": [math.nan, math.nan], "b": [0.05, 0.03], "c": [-0.01, 0.01], "d": [0.02, 0.02], "e": [0.0, 0.0]}
    matrix = selector_regret_matrix(_regret_table(regrets))
    # c and e both average 0: table order; a has no regret at all: last
    assert matrix.rows == ("c", "e", "d", "b", "a")
    np.testing.assert_allclose(matrix.values[:, -1], [0.0, 0.0, 2.0, 4.0, np.nan])


def test_regret_matrix_nan_cells_and_a_mean_over_fewer_cells():
    matrix = selector_regret_matrix(_regret_table({"x": [math.nan, 0.03], "y": [math.nan, math.nan]}))
    assert matrix.rows == ("x", "y") and matrix.counts == (1, 0)
    assert [matrix.text(0, column) for column in range(3)] == ["-", "+3.0", "+3.0 (n=1)"]
    assert [matrix.text(1, column) for column in range(3)] == ["-", "-", "-"]
    assert matrix.has_regret


def test_regret_matrix_significance_marks_cells_never_the_mean():
    matrix = selector_regret_matrix(_regret_table({"last": [0.103, 0.0004]},
                                                  significant={"last": [True, False]}))
    assert [matrix.text(0, column) for column in range(3)] == ["+10.3*", "+0.0", "+5.2"]
    assert not matrix.significant[0, -1]
    negative = selector_regret_matrix(_regret_table({"middle": [-0.0004, -0.01]}))
    assert [negative.text(0, column) for column in range(2)] == ["+0.0", "-1.0"]  # no "-0.0"


def test_regret_matrix_labels_columns_with_models_when_there_are_several():
    table = pd.concat([_regret_table({"first": [0.0, 0.01]}),
                       _regret_table({"first": [0.02, 0.03]}, llm="qwen")])
    matrix = selector_regret_matrix(table)
    assert matrix.columns == ("cola / minilm / smollm2", "imdb / minilm / smollm2", "cola / minilm / qwen",
                              "imdb / minilm / qwen", "mean")
    np.testing.assert_allclose(matrix.values, [[0.0, 1.0, 2.0, 3.0, 1.5]])


def test_regret_matrix_refuses_repeated_rows_and_missing_columns():
    table = _regret_table({"first": [0.0, 0.01]})
    with pytest.raises(ValueError, match="repeated rows"):
        selector_regret_matrix(pd.concat([table, table.iloc[[0]]]))
    with pytest.raises(ValueError, match="regret_significant"):
        selector_regret_matrix(table.drop(columns="regret_significant"))


def test_selector_regret_figure_for_a_leaderboard_like_table(tmp_path):
    path = tmp_path / "selectors.regret.svg"
    plot_selector_regret(path, selectors=_leaderboard_like(), title="Selectors x datasets: regret")
    texts = _texts(path)
    assert "Selectors x datasets: regret" in texts
    assert {"cola_real", "tweet_offensive_real", "mean"} <= set(texts)
    assert "ilm_pc_patching (pifi_ilm)" in texts and all(name in texts for name in SELECTORS[1:])
    assert _is_bold(path, "ilm_pc_patching (pifi_ilm)") and not _is_bold(path, "probe_cv")
    assert "-1.0" in texts and "+11.8" in texts and "+3.5 (n=1)" in texts
    assert len([text for text in texts if text.endswith("*")]) == 1  # only last on imdb is significant
    assert texts.count("-") >= 4 + 1 + 3  # probe_cv's row and mean, logme's gaps
    matrix = selector_regret_matrix(_leaderboard_like())
    heights = _text_heights(path)  # best mean on top: y grows downwards in SVG
    labels = [f"{name} (pifi_ilm)" if drives else name for name, drives in zip(matrix.rows, matrix.drives)]
    assert [heights[label] for label in labels] == sorted(heights[label] for label in labels)
    assert labels[-1] == "probe_cv"


def test_selector_regret_figure_without_a_sweep_says_so(tmp_path):
    path = tmp_path / "selectors.regret.svg"
    no_sweep = _regret_table({"ilm_pc_patching": [math.nan, math.nan], "first": [math.nan, math.nan]})
    plot_selector_regret(path, selectors=no_sweep, title="t")
    assert "no sweep: no regret to show" in _svg_texts(path)
    plot_selector_regret(tmp_path / "empty.svg", selectors=no_sweep.iloc[0:0], title="t")  # no selectors at all
    assert "no sweep: no regret to show" in _svg_texts(tmp_path / "empty.svg")


def test_selector_regret_figure_bad_input_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="regret"):
        plot_selector_regret(tmp_path / "s.svg", selectors=_leaderboard_like().drop(columns="regret"), title="t")
    _assert_empty(tmp_path)


# --- all figures ----------------------------------------------------------------------------------

def test_identical_input_gives_identical_bytes(tmp_path):
    _profile(tmp_path / "a.svg")
    _profile(tmp_path / "b.svg")
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()
    rows = paired_difference_rows(_comparisons(), layer_of=LAYER_OF)
    plot_paired_differences(tmp_path / "c.svg", title="methods", rows=rows)
    plot_paired_differences(tmp_path / "d.svg", title="methods", rows=rows)
    assert (tmp_path / "c.svg").read_bytes() == (tmp_path / "d.svg").read_bytes()
    plot_selector_regret(tmp_path / "e.svg", selectors=_leaderboard_like(), title="selectors")
    plot_selector_regret(tmp_path / "f.svg", selectors=_leaderboard_like(), title="selectors")
    assert (tmp_path / "e.svg").read_bytes() == (tmp_path / "f.svg").read_bytes()


def _assert_empty(directory: Path) -> None:
    assert list(directory.iterdir()) == [], "a failed plot left files behind"


def test_bad_sweep_column_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="val_mean"):
        _profile(tmp_path / "profile.svg", sweep=_sweep().rename(columns={"val_mean": "validation"}))
    _assert_empty(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"selector_scores": {"a": [0.0] * NUM_LAYERS, "b": [0.0] * 3}, "chosen": {}}, "different lengths"),
     ({"chosen": {"probe_cv": NUM_LAYERS}}, "outside"),
     ({"selectors": _selectors().drop(columns="win_rate")}, "win_rate")],
)
def test_inconsistent_layer_profile_input_raises(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _profile(tmp_path / "profile.svg", **overrides)
    _assert_empty(tmp_path)


def test_failure_while_saving_leaves_no_file(tmp_path, monkeypatch):
    # A crash inside savefig must not leave a partial figure or the temporary file.
    from matplotlib.figure import Figure

    def broken_savefig(self, *args, **kwargs):
        Path(args[0]).write_text("<svg partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_paired_differences(tmp_path / "methods.svg", title="t", rows=[PairedDifference("a − b", 1, 0, 2, True)])
    _assert_empty(tmp_path)
