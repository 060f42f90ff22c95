"""The comparison table over runs and its Markdown report, from fake metrics files."""

from __future__ import annotations

import math

import pytest

from pifi.artifacts import write_json
from pifi.summary import markdown_report, selections_table, summarize_runs

ACCURACY = {  # (dataset, method, seed) -> accuracy
    ("sst2", "base", 1): 0.80, ("sst2", "base", 2): 0.90,
    ("sst2", "pifi_last", 1): 0.82, ("sst2", "pifi_last", 2): 0.84,
    ("sst2", "pifi_ilm", 1): 0.86, ("sst2", "pifi_ilm", 2): 0.88,
    ("topics", "base", 1): 0.70,
    ("topics", "pifi_last", 1): 0.72,
    ("topics", "pifi_ilm", 1): 0.75,
}
LAYER = {"base": None, "pifi_last": 2, "pifi_ilm": 1}


def metrics(dataset: str, method: str, seed: int) -> dict:
    accuracy = ACCURACY[(dataset, method, seed)]
    return {
        "dataset": dataset, "slm": "tiny_bert", "llm": None if method == "base" else "tiny_llama",
        "method": method, "seed": seed, "llm_layer": LAYER[method],
        "accuracy": accuracy, "macro_f1": accuracy - 0.01, "mcc": 2 * accuracy - 1,
        "test_rows": 100, "best_epoch": 2, "train_seconds": 10.0 * seed,
        "trainable_params": 1000 if method == "base" else 4000, "total_params": 1000 if method == "base" else 9000,
    }


@pytest.fixture
def metrics_files(tmp_path):
    files = []
    # written in an order that is not the table's: pifi_ilm first, base last
    for (dataset, method, seed) in sorted(ACCURACY, key=lambda k: (k[1] != "pifi_ilm", k[1] == "base", k)):
        path = tmp_path / "runs" / dataset / method / f"seed{seed}" / "metrics.json"
        write_json(path, metrics(dataset, method, seed))
        files.append(path)
    return files


@pytest.fixture
def selection_files(tmp_path):
    files = []
    for dataset, layer, runner_up, margin, win_rate in (("sst2", 1, 2, 0.0125, 0.7), ("topics", 0, 1, 0.0, None)):
        path = tmp_path / "selection" / dataset / "selection.json"
        write_json(path, {"dataset": dataset, "slm": "tiny_bert", "llm": "tiny_llama", "selector": "ilm_pc_patching",
                          "layer": layer, "effect": 0.25, "runner_up_layer": runner_up,
                          "margin": margin, "win_rate": win_rate, "last_layer_effect": 0.1, "num_layers": 3})
        files.append(path)
    return files


def test_summary_means_stds_and_method_order(metrics_files):
    table = summarize_runs(metrics_files)
    assert len(table) == 6
    assert table[["dataset", "method"]].values.tolist() == [
        ["sst2", "base"], ["sst2", "pifi_last"], ["sst2", "pifi_ilm"],
        ["topics", "base"], ["topics", "pifi_last"], ["topics", "pifi_ilm"]]
    row = table.iloc[0]
    assert row["llm"] == "-" and row["llm_layer"] == "-"
    assert row["n_seeds"] == 2
    assert row["accuracy_mean"] == pytest.approx(0.85)
    assert row["accuracy_std"] == pytest.approx(math.sqrt(((0.05 ** 2) * 2) / 1))  # sample std over 2 seeds
    assert row["mcc_mean"] == pytest.approx(0.7)
    assert row["train_seconds_mean"] == pytest.approx(15.0)
    ilm = table[(table["dataset"] == "sst2") & (table["method"] == "pifi_ilm")].iloc[0]
    assert ilm["llm"] == "tiny_llama" and ilm["llm_layer"] == "1"
    assert ilm["accuracy_mean"] == pytest.approx(0.87) and ilm["accuracy_std"] == pytest.approx(0.0141421356)
    assert ilm["trainable_params"] == 4000 and ilm["total_params"] == 9000
    last = table[(table["dataset"] == "sst2") & (table["method"] == "pifi_last")].iloc[0]
    assert last["llm_layer"] == "2"


def test_one_seed_has_zero_std(metrics_files):
    table = summarize_runs(metrics_files)
    topics = table[table["dataset"] == "topics"]
    assert (topics["n_seeds"] == 1).all()
    for metric in ("accuracy", "macro_f1", "mcc"):
        assert (topics[f"{metric}_std"] == 0.0).all()
    assert topics["accuracy_mean"].tolist() == pytest.approx([0.70, 0.72, 0.75])


def test_no_runs_is_an_error():
    with pytest.raises(ValueError, match="no runs"):
        summarize_runs([])


def test_markdown_report_has_a_row_per_dataset_and_method_and_the_selection_table(metrics_files, selection_files):
    table = summarize_runs(metrics_files)
    selections = selections_table(selection_files)
    assert selections["layer"].tolist() == [1, 0]
    report = markdown_report(table, selections)
    lines = report.splitlines()
    for dataset in ("sst2", "topics"):
        for method in ("base", "pifi_last", "pifi_ilm"):
            llm = "-" if method == "base" else "tiny_llama"
            matching = [line for line in lines if line.startswith(f"| {dataset} | tiny_bert | {llm} | {method} |")]
            assert len(matching) == 1, (dataset, method)
    assert "| sst2 | tiny_bert | - | base | - | 2 | 85.00 ± 7.07 |" in report
    assert "| topics | tiny_bert | tiny_llama | pifi_ilm | 1 | 1 | 75.00 ± 0.00 |" in report
    assert "4,000 | 9,000 |" in report
    assert "## Layer selection" in report
    selection_lines = [line for line in lines if "ilm_pc_patching" in line]
    assert len(selection_lines) == 2
    assert selection_lines[0].startswith("| sst2 | tiny_bert | tiny_llama | ilm_pc_patching | 1 | 0.2500 | 2 | 0.0125 |")
    assert selection_lines[0].endswith("| 0.0125 | 70% | 0.1000 | 3 |")
    assert selection_lines[1].endswith("| 0 | 0.2500 | 1 | 0.0000 | - | 0.1000 | 3 |")  # no stability measured
    # base rows come before the PiFi rows of their dataset
    assert report.index("| sst2 | tiny_bert | - | base |") < report.index("| sst2 | tiny_bert | tiny_llama | pifi_last |")


def test_markdown_report_without_selections_has_no_selection_table(metrics_files):
    import pandas as pd

    report = markdown_report(summarize_runs(metrics_files), pd.DataFrame())
    assert "## Layer selection" not in report
    assert report.count("| sst2 |") == 3


def test_selection_without_a_runner_up_shows_a_dash(tmp_path, metrics_files):
    """A one-layer LLM has no runner-up: runner-up and margin read "-" rather than None or nan."""
    path = tmp_path / "selection.json"
    write_json(path, {"dataset": "sst2", "slm": "tiny_bert", "llm": "one_layer", "selector": "ilm_pc_patching",
                      "layer": 0, "effect": 0.25, "runner_up_layer": None, "margin": None,
                      "last_layer_effect": 0.25, "num_layers": 1})
    report = markdown_report(summarize_runs(metrics_files), selections_table([path]))
    assert "| sst2 | tiny_bert | one_layer | ilm_pc_patching | 0 | 0.2500 | - | - | - | 0.2500 | 1 |" in report
