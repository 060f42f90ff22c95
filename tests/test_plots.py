"""The report figures: valid SVG with readable text, deterministic bytes, nothing left on error."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pifi.plots import normalized_scores, plot_layer_profile, plot_method_comparison

SVG_NAMESPACE = "{http://www.w3.org/2000/svg}"
NUM_LAYERS = 8


def _svg_texts(path: Path) -> str:
    """All text of the SVG's <text> elements, joined; parsing it also proves the file is valid XML."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG_NAMESPACE}svg"
    return "\n".join("".join(element.itertext()) for element in root.iter(f"{SVG_NAMESPACE}text"))


def _text_heights(path: Path) -> dict[str, float]:
    """The y coordinate of each <text> element, by its text."""
    root = ET.parse(path).getroot()
    return {"".join(e.itertext()): float(e.get("y")) for e in root.iter(f"{SVG_NAMESPACE}text") if e.get("y")}


def _sweep() -> pd.DataFrame:
    layers = np.array([0, 2, 4, 6])
    val = np.array([0.70, 0.78, 0.81, 0.75])
    test = val - 0.01
    return pd.DataFrame({"layer": layers, "val_mean": val, "val_low": val - 0.02, "val_high": val + 0.02,
                         "test_mean": test, "test_low": test - 0.02, "test_high": test + 0.02})


def _selector_scores() -> dict[str, list[float]]:
    return {"ilm_pc_patching": [0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 1.2],
            "probe_cv": [0.6, 0.7, 0.8, 0.85, 0.9, 0.88, 0.8, 0.7]}


def _methods() -> pd.DataFrame:
    return pd.DataFrame({"method": ["base", "pifi_last", "pifi_ilm"],
                         "label": ["base", "pifi_last (layer 7)", "pifi_ilm (layer 4)"],
                         "accuracy": [0.70, 0.74, 0.80], "low": [0.68, 0.72, 0.78], "high": [0.72, 0.76, 0.82]})


def _profile(path: Path, **overrides) -> None:
    arguments = {"title": "sst2 / tiny-bert / tiny-llama", "sweep": _sweep(),
                 "selector_scores": _selector_scores(), "chosen": {"ilm_pc_patching": 7, "probe_cv": 4},
                 "oracle_layer": 4, "last_layer": NUM_LAYERS - 1}
    plot_layer_profile(path, **{**arguments, **overrides})


def test_layer_profile_writes_svg_with_title_selectors_and_markers(tmp_path):
    path = tmp_path / "profile.svg"
    _profile(path)
    texts = _svg_texts(path)
    assert "sst2 / tiny-bert / tiny-llama" in texts
    assert "ilm_pc_patching (chose layer 7)" in texts
    assert "probe_cv (chose layer 4)" in texts
    assert "oracle: layer 4" in texts and "last layer (7)" in texts
    assert "validation" in texts and "LLM layer index" in texts


def test_layer_profile_without_sweep_plots_selectors_only(tmp_path):
    path = tmp_path / "profile.svg"
    _profile(path, sweep=_sweep().iloc[0:0], oracle_layer=None)
    texts = _svg_texts(path)
    assert "ilm_pc_patching (chose layer 7)" in texts and "probe_cv (chose layer 4)" in texts
    assert "validation" not in texts  # no accuracy panel
    assert "last layer (7)" in texts  # the marker is explained in the selector legend instead


def test_layer_profile_with_constant_scores(tmp_path):
    path = tmp_path / "profile.svg"
    _profile(path, selector_scores={"last": [1.0] * NUM_LAYERS}, chosen={"last": NUM_LAYERS - 1})
    assert "last (chose layer 7)" in _svg_texts(path)


def test_normalized_scores_min_max_constant_and_nan():
    np.testing.assert_allclose(normalized_scores([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(normalized_scores([3.0, 3.0]), [0.5, 0.5])
    np.testing.assert_array_equal(normalized_scores([1.0, np.nan, 3.0]), [0.0, np.nan, 1.0])


def test_identical_input_gives_identical_bytes(tmp_path):
    _profile(tmp_path / "a.svg")
    _profile(tmp_path / "b.svg")
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()
    plot_method_comparison(tmp_path / "c.svg", title="methods", methods=_methods())
    plot_method_comparison(tmp_path / "d.svg", title="methods", methods=_methods())
    assert (tmp_path / "c.svg").read_bytes() == (tmp_path / "d.svg").read_bytes()


def test_method_comparison_writes_labels_in_order(tmp_path):
    path = tmp_path / "methods.svg"
    plot_method_comparison(path, title="sst2: test accuracy", methods=_methods())
    texts = _svg_texts(path)
    assert "sst2: test accuracy" in texts
    labels = ["base", "pifi_last (layer 7)", "pifi_ilm (layer 4)"]
    assert all(label in texts for label in labels)
    # First row on top: SVG y grows downwards, so the labels' y must increase in the given order.
    heights = _text_heights(path)
    assert heights["base"] < heights["pifi_last (layer 7)"] < heights["pifi_ilm (layer 4)"]


def _assert_empty(directory: Path) -> None:
    assert list(directory.iterdir()) == [], "a failed plot left files behind"


def test_bad_sweep_column_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="val_mean"):
        _profile(tmp_path / "profile.svg", sweep=_sweep().rename(columns={"val_mean": "validation"}))
    _assert_empty(tmp_path)


def test_bad_method_column_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="label"):
        plot_method_comparison(tmp_path / "methods.svg", title="t", methods=_methods().drop(columns="label"))
    _assert_empty(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"selector_scores": {"a": [0.0] * NUM_LAYERS, "b": [0.0] * 3}, "chosen": {}}, "different lengths"),
     ({"chosen": {"probe_cv": NUM_LAYERS}}, "outside")],
)
def test_inconsistent_layer_profile_input_raises(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _profile(tmp_path / "profile.svg", **overrides)
    _assert_empty(tmp_path)


def test_interval_not_around_accuracy_raises(tmp_path):
    methods = _methods()
    methods.loc[1, "low"] = 0.9
    with pytest.raises(ValueError, match="pifi_last"):
        plot_method_comparison(tmp_path / "methods.svg", title="t", methods=methods)
    _assert_empty(tmp_path)


def test_failure_while_saving_leaves_no_file(tmp_path, monkeypatch):
    # A crash inside savefig must not leave a partial figure or the temporary file.
    from matplotlib.figure import Figure

    def broken_savefig(self, *args, **kwargs):
        Path(args[0]).write_text("<svg partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_method_comparison(tmp_path / "methods.svg", title="t", methods=_methods())
    _assert_empty(tmp_path)
