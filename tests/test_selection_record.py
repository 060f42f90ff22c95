"""Selector score files and the selection file (pifi.choice)."""

from __future__ import annotations

import pytest

from pifi.selection_record import best_layer, choice, margin, scores_report, selection_record, unconverged_layers


def test_best_layer_is_the_first_maximum():
    assert best_layer([0.1, 0.3, 0.3, 0.2]) == 1


def test_margin_names_the_runner_up():
    assert margin([0.1, 0.5, 0.3]) == {"runner_up_layer": 2, "margin": pytest.approx(0.2)}
    assert margin([0.4]) == {"runner_up_layer": None, "margin": None}


def test_scores_report_holds_the_uniform_keys():
    report = scores_report("fisher", [1.0, 3.0, 2.0], converged=None,
                           stability={"win_rate": [0.0, 0.7, 0.3], "modal_layer": 1}, params={}, dataset="d")
    assert report["best_layer"] == 1 and report["runner_up_layer"] == 2 and report["margin"] == 1.0
    assert report["num_layers"] == 3 and report["converged"] is None and report["dataset"] == "d"


def test_choice_reads_win_rate_and_modal_layer_of_the_chosen_layer():
    report = {"scores": [0.1, 0.3, 0.2], "stability": {"win_rate": [0.2, 0.5, 0.3], "modal_layer": 1}}
    picked = choice(report)
    assert picked["layer"] == 1 and picked["win_rate"] == 0.5 and picked["modal_layer"] == 1
    assert choice({"scores": [0.3, 0.1], "stability": None})["win_rate"] is None


def test_selection_record_is_driven_by_the_configured_selector():
    reports = {"ilm_pc_patching": {"scores": [0.0, 0.2, 0.1]}, "last": {"scores": [0, 1, 2]}}
    record = selection_record(reports, "last", dataset="d", slm="s", llm="l")
    assert record["layer"] == 2 and record["selector"] == "last"
    assert record["choices"]["ilm_pc_patching"]["layer"] == 1
    with pytest.raises(ValueError, match="mdl"):
        selection_record(reports, "mdl", dataset="d", slm="s", llm="l")


def test_unconverged_layers():
    assert unconverged_layers([True, False, True, False]) == [1, 3]
    assert unconverged_layers(None) == []


def test_modal_choice_takes_the_layer_that_won_most_resamples():
    """demo_sentiment's case: the best-scored layer (2) won no resample, layer 0 most of them."""
    report = {"scores": [0.1, 0.2, 0.9], "stability": {"win_rate": [0.6, 0.4, 0.0], "modal_layer": 0}}
    modal = choice(report, "modal")
    assert (modal["layer"], modal["argmax_layer"], modal["win_rate"], modal["score"]) == (0, 2, 0.6, 0.1)
    assert choice(report)["layer"] == 2 and choice(report)["win_rate"] == 0.0
    assert choice({"scores": [0.1, 0.9], "stability": None}, "modal")["layer"] == 1  # no resamples: the argmax
    record = selection_record({"fisher": report}, "fisher", dataset="d", slm="s", llm="l", rule="modal")
    assert record["layer"] == 0 and record["rule"] == "modal"
    with pytest.raises(ValueError, match="selection.choice must be one of"):
        choice(report, "median")
