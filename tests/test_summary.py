"""The judge: summary tables from a synthetic project whose answers are known by hand.

One dataset x SLM x LLM (an LLM of 6 decoder layers), 3 seeds, 100 test rows. In every run the first
k rows (by row id) are predicted right and the rest wrong, so correctness is nested across runs and
every accuracy, difference and regret below is hand-computed. Each run's rows are written in its own
shuffled order, so pairing depends on the summary sorting by row id.

    run          seeds' test correct   validation accuracy   why trained
    base         50, 52, 54            0.60 each             -
    layer 0      70 each               0.70, 0.72, 0.74      swept; ilm_pc_patching's choice
    layer 1      95 each               0.95 each             fisher's choice only (not swept)
    layer 2      75 each               0.80 each             swept: best validation -> the oracle
    layer 5      85 each               0.76 each             swept (-1) and pifi_last: best *test*

The sweep is {layers: [0, 2, -1]}: layers 0, 2 and 5. Oracle = 2 (validation), not 5 (test) nor 1
(best validation of all, but not swept).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pifi.artifacts import read_json, write_json, write_parquet
from pifi.selection_record import scores_report, selection_record
from pifi.evaluation import classification_metrics, predictions_frame
from pifi.summary import Bootstrap, build_tables, correctness, load_runs, method_runs, sweep_judge
from pifi.summary_text import STABLE_WIN_RATE, difference_text, markdown_report, win_rate_cell

DATASET, SLM, LLM = "sst2", "tiny_bert", "tiny_qwen"
DEPTH = 6
SEEDS = (1, 2, 3)
ROWS = 100
VAL_ROWS = 100
BOOT = Bootstrap(n_resamples=500)
SWEEP = {"layers": [0, 2, -1], "stride": 1}
ALL_METHODS = ["base", "pifi_last", "pifi_ilm", "pifi_sweep"]

# layer (None = base) -> (test rows correct per seed, validation accuracy per seed)
RUNS = {
    None: ((50, 52, 54), (0.60, 0.60, 0.60)),
    0: ((70, 70, 70), (0.70, 0.72, 0.74)),
    1: ((95, 95, 95), (0.95, 0.95, 0.95)),
    2: ((75, 75, 75), (0.80, 0.80, 0.80)),
    5: ((85, 85, 85), (0.76, 0.76, 0.76)),
}

# selector -> (scores per layer, converged per layer); the chosen layer is the argmax
SCORES = {
    "ilm_pc_patching": ([0.9, 0.1, 0.2, 0.3, 0.4, 0.5], [True] * 6),        # -> 0; rho -1 on {0, 2, 5}
    "probe_cv": ([0.72, 0.1, 0.80, 0.3, 0.4, 0.76], [True] * 5 + [False]),  # -> 2 (the oracle); rho +1
    "fisher": ([1.0, 9.0, 3.0, 0.0, 0.0, 2.0], None),                       # -> 1 (not swept); rho +1
    "last": ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], None),                         # -> 5; rho +0.5
    "silhouette": ([2.0, 0.0, 3.0, 5.0, 0.0, 1.0], None),                   # -> 3 (never trained); rho +0.5
}
STABILITY = {"ilm_pc_patching": {"win_rate": [0.6, 0.0, 0.1, 0.1, 0.1, 0.1], "modal_layer": 0}}


def _write_run(root, layer, seed_index: int) -> str:
    correct_counts, validation = RUNS[layer]
    seed, k = SEEDS[seed_index], correct_counts[seed_index]
    run_dir = (root / "results/runs" / DATASET / SLM / "base" / f"seed{seed}" if layer is None else
               root / "results/runs" / DATASET / SLM / "pifi" / LLM / f"layer{layer}" / f"seed{seed}")
    labels = np.arange(ROWS) % 2
    predictions = np.where(np.arange(ROWS) < k, labels, 1 - labels)
    probabilities = np.eye(2)[predictions] * 0.8 + 0.1
    frame = predictions_frame([f"test-{i:06d}" for i in range(ROWS)], labels, probabilities)
    order = np.random.default_rng(100 * seed + (layer or 0) + 7).permutation(ROWS)
    write_parquet(run_dir / "predictions.parquet", frame.iloc[order].reset_index(drop=True))
    # validation: the first round(accuracy x VAL_ROWS) rows right, as the run's validation_accuracy says
    k_val = round(validation[seed_index] * VAL_ROWS)
    val_labels = np.arange(VAL_ROWS) % 2
    val_predictions = np.where(np.arange(VAL_ROWS) < k_val, val_labels, 1 - val_labels)
    write_parquet(run_dir / "validation_predictions.parquet",
                  predictions_frame([f"validation-{i:06d}" for i in range(VAL_ROWS)], val_labels,
                                    np.eye(2)[val_predictions] * 0.8 + 0.1))
    metrics = classification_metrics(labels, predictions)
    assert metrics["accuracy"] == k / ROWS
    base = layer is None
    write_json(run_dir / "metrics.json", {
        "dataset": DATASET, "slm": SLM, "llm": None if base else LLM, "method": "base" if base else "pifi",
        "llm_layer": None if base else layer, "num_layers": None if base else DEPTH, "seed": seed, **metrics,
        "test_rows": ROWS, "best_epoch": 2, "validation_accuracy": validation[seed_index],
        "trainable_params": 1000 if base else 5000, "total_params": 1000 if base else 9000})
    return str(run_dir / "metrics.json")


def write_project(root, *, layers=(None, 0, 1, 2, 5), selector: str | None = "ilm_pc_patching",
                  selectors=tuple(SCORES)) -> dict[str, list[str]]:
    """Run files for ``layers`` (None = base) x SEEDS; with ``selector``, score files and selection.json."""
    files = {"metrics": [_write_run(root, layer, i) for layer in layers for i in range(len(SEEDS))],
             "selections": [], "scores": []}
    if selector is None:
        return files
    reports = {}
    for name in selectors:
        scores, converged = SCORES[name]
        fields = {"dataset": DATASET, "llm_type": LLM}
        if name == "ilm_pc_patching":  # the reference experiment's effects.json: it names the SLM, and has `effects`
            fields.update(slm_type=SLM, effects=scores, best_llm_layer=int(np.argmax(scores)))
        reports[name] = scores_report(name, scores, converged=converged, stability=STABILITY.get(name),
                                      params={}, **fields)
        path = root / "results/selection" / DATASET / LLM / f"{name}.json"
        write_json(path, reports[name])
        files["scores"].append(str(path))
    path = root / "results/selection" / DATASET / SLM / LLM / "selection.json"
    write_json(path, selection_record(reports, selector, dataset=DATASET, slm=SLM, llm=LLM))
    files["selections"].append(str(path))
    return files


def tables_for(files, methods=ALL_METHODS, sweep=SWEEP):
    return build_tables(files["metrics"], files["selections"], files["scores"], methods=methods, sweep=sweep,
                        boot=BOOT)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    files = write_project(root)
    return files, tables_for(files)


def _by(table: pd.DataFrame, column: str) -> dict:
    return {value: row for value, row in zip(table[column], table.to_dict("records"))}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --- summary -------------------------------------------------------------------------------------

def test_summary_has_every_method_with_its_layer_and_hand_computed_accuracy(project):
    summary = project[1]["summary"]
    assert list(summary["method"]) == ["base", "pifi_last", "pifi_ilm", "pifi_oracle"]
    rows = _by(summary, "method")
    # pifi_last = depth - 1; pifi_ilm = ilm_pc_patching's layer; oracle = best validation among {0, 2, 5}
    assert {m: r["llm_layer"] for m, r in rows.items()} == {
        "base": "-", "pifi_last": "5", "pifi_ilm": "0", "pifi_oracle": "2"}
    expected = {"base": (0.52, 0.02), "pifi_last": (0.85, 0.0), "pifi_ilm": (0.70, 0.0), "pifi_oracle": (0.75, 0.0)}
    for method, (mean, std) in expected.items():
        row = rows[method]
        assert row["accuracy_mean"] == pytest.approx(mean), method
        assert row["accuracy_std"] == pytest.approx(std, abs=1e-12), method
        assert row["n_seeds"] == 3
        assert row["accuracy_low"] <= mean <= row["accuracy_high"], method
        assert row["llm"] == LLM
    # base's seeds differ (50, 52, 54 of 100 rows), so its interval has width; a constant PiFi layer's
    # seeds agree, but its rows are still resampled
    assert rows["base"]["accuracy_high"] - rows["base"]["accuracy_low"] > 0.02
    assert rows["pifi_oracle"]["validation_accuracy_mean"] == pytest.approx(0.80)
    assert rows["pifi_ilm"]["validation_accuracy_mean"] == pytest.approx(0.72)
    assert (rows["base"]["trainable_params"], rows["pifi_last"]["total_params"]) == (1000, 9000)


def test_oracle_follows_validation_not_test_and_ignores_unswept_layers(project):
    summary, layers = project[1]["summary"], project[1]["layers"]
    best_test_swept = layers[layers["swept"]].sort_values("test_mean")["layer"].iloc[-1]
    best_val_overall = layers.sort_values("val_mean")["layer"].iloc[-1]
    assert (best_test_swept, best_val_overall) == (5, 1)  # the traps the oracle must not fall into
    assert _by(summary, "method")["pifi_oracle"]["llm_layer"] == "2"


def test_method_runs_views_are_the_layers_runs(project):
    files, _ = project
    runs = load_runs(files["metrics"])
    selections = {(DATASET, SLM, LLM): {**read_json(files["selections"][0]), "swept_layers": [0, 2, 5]}}
    views = method_runs(runs, selections, ALL_METHODS, judged=sweep_judge(runs, selections, Bootstrap(n_resamples=200)))
    assert sorted(views) == sorted((DATASET, SLM, LLM, m) for m in ("base", "pifi_last", "pifi_ilm", "pifi_oracle"))
    assert sorted(views[(DATASET, SLM, LLM, "pifi_oracle")]["llm_layer"]) == [2, 2, 2]
    assert sorted(views[(DATASET, SLM, LLM, "base")]["seed"]) == [1, 2, 3]
    # seeds x rows, rows in row-id order: base seed 2 has its first 52 rows right
    matrix = correctness(views[(DATASET, SLM, LLM, "base")])
    assert matrix.shape == (3, ROWS)
    assert matrix.sum(axis=1).tolist() == [50, 52, 54]
    assert matrix[1, :52].all() and not matrix[1, 52:].any()


# --- comparisons ---------------------------------------------------------------------------------

def test_comparisons_name_the_winner_of_a_clear_gap(project):
    comparisons = project[1]["comparisons"]
    by_pair = {(r["a"], r["b"]): r for r in comparisons.to_dict("records")}
    assert list(by_pair) == [("pifi_ilm", "base"), ("pifi_ilm", "pifi_last"), ("pifi_last", "base"),
                             ("pifi_oracle", "pifi_ilm")]
    expected = {("pifi_ilm", "base"): 0.18, ("pifi_ilm", "pifi_last"): -0.15, ("pifi_last", "base"): 0.33,
                ("pifi_oracle", "pifi_ilm"): 0.05}
    for pair, difference in expected.items():
        row = by_pair[pair]
        assert row["difference"] == pytest.approx(difference), pair
        assert row["significant"], pair
        assert row["low"] <= difference <= row["high"], pair
        assert (row["low"] > 0) == (difference > 0) and (row["high"] < 0) == (difference < 0), pair
    assert by_pair[("pifi_ilm", "base")]["verdict"].startswith("pifi_ilm better than base (+18.00 pts, 95% CI +")
    assert by_pair[("pifi_ilm", "pifi_last")]["verdict"].startswith("pifi_ilm worse than pifi_last (-15.00 pts")
    assert by_pair[("pifi_oracle", "pifi_ilm")]["verdict"].startswith("pifi_oracle better than pifi_ilm (+5.00 pts")


def test_identical_predictions_are_no_significant_difference(tmp_path):
    files = write_project(tmp_path, selector="probe_cv")  # probe_cv picks layer 2, the oracle itself
    tables = tables_for(files)
    assert _by(tables["summary"], "method")["pifi_ilm"]["llm_layer"] == "2"
    row = tables["comparisons"].set_index(["a", "b"]).loc[("pifi_oracle", "pifi_ilm")]
    assert (row["difference"], row["low"], row["high"]) == (0.0, 0.0, 0.0)
    assert not row["significant"]
    assert row["verdict"] == "no significant difference (+0.00 pts, 95% CI +0.00 to +0.00)"
    selectors = _by(tables["selectors"], "selector")
    assert [name for name, r in selectors.items() if r["drives_pifi_ilm"]] == ["probe_cv"]


# --- selectors -----------------------------------------------------------------------------------

def test_selectors_regret_rank_and_spearman_match_hand_values(project):
    selectors = _by(project[1]["selectors"], "selector")
    assert sorted(selectors) == sorted(SCORES)
    # selector: (layer, regret = test(oracle 2) - test(layer), rank among val {0: .72, 2: .80, 5: .76}, rho)
    expected = {"ilm_pc_patching": (0, 0.05, 3, -1.0), "probe_cv": (2, 0.0, 1, 1.0), "fisher": (1, -0.20, 1, 1.0),
                "last": (5, -0.10, 2, 0.5)}
    for name, (layer, regret, rank, rho) in expected.items():
        row = selectors[name]
        assert row["layer"] == layer, name
        assert row["oracle_layer"] == 2, name
        assert row["regret"] == pytest.approx(regret, abs=1e-12), name
        assert row["regret_low"] <= regret <= row["regret_high"], name
        assert row["rank"] == rank, name
        assert row["n_swept"] == 3, name
        assert row["spearman_rho"] == pytest.approx(rho), name
        # tau by hand: concordant - discordant of the 3 layer pairs, over 3 (last: 2 - 1)
        assert row["kendall_tau"] == pytest.approx({1.0: 1.0, -1.0: -1.0, 0.5: 1 / 3}[rho]), name
        assert row["oracle_in_top3"], name  # 3 swept layers: every one is in the top 3
    assert (selectors["probe_cv"]["regret_low"], selectors["probe_cv"]["regret_high"]) == (0.0, 0.0)
    assert not selectors["probe_cv"]["regret_significant"]
    assert selectors["ilm_pc_patching"]["regret_significant"]
    assert selectors["fisher"]["regret_significant"] and selectors["fisher"]["regret_high"] < 0  # really better


def test_selector_with_untrained_layer_gets_no_regret(project):
    row = _by(project[1]["selectors"], "selector")["silhouette"]
    assert row["layer"] == 3
    for column in ("regret", "regret_low", "regret_high", "rank"):
        assert _missing(row[column]), column
    assert not row["regret_significant"]
    # its scores can still be set against the sweep: {0: 2, 2: 3, 5: 1} vs {0: .72, 2: .80, 5: .76}
    assert row["spearman_rho"] == pytest.approx(0.5)
    assert row["kendall_tau"] == pytest.approx(1 / 3)  # pairs (0,2) and (2,5) concordant, (0,5) not


def test_selectors_record_driver_margin_stability_and_convergence(project):
    selectors = _by(project[1]["selectors"], "selector")
    assert {n for n, r in selectors.items() if r["drives_pifi_ilm"]} == {"ilm_pc_patching"}
    ilm = selectors["ilm_pc_patching"]
    assert ilm["margin"] == pytest.approx(0.9 - 0.5)
    assert ilm["win_rate"] == pytest.approx(0.6)
    assert ilm["modal_layer"] == 0
    assert _missing(selectors["fisher"]["win_rate"])
    assert ilm["converged"] is True
    assert selectors["probe_cv"]["converged"] is False  # one layer's probe did not converge
    assert _missing(selectors["fisher"]["converged"])


def test_selector_scores_table_marks_each_choice(project):
    scores = project[1]["selector_scores"]
    assert len(scores) == len(SCORES) * DEPTH
    chosen = scores[scores["chosen"]].set_index("selector")["layer"].to_dict()
    assert chosen == {"ilm_pc_patching": 0, "probe_cv": 2, "fisher": 1, "last": 5, "silhouette": 3}
    fisher = scores[scores["selector"] == "fisher"].sort_values("layer")["score"].tolist()
    assert fisher == SCORES["fisher"][0]


# --- layers --------------------------------------------------------------------------------------

def test_layers_table_marks_swept_layers_and_intervals(project):
    layers = project[1]["layers"].set_index("layer")
    assert list(layers.index) == [0, 1, 2, 5]
    assert layers["swept"].to_dict() == {0: True, 1: False, 2: True, 5: True}
    assert layers["val_mean"].to_dict() == pytest.approx({0: 0.72, 1: 0.95, 2: 0.80, 5: 0.76})
    assert layers["test_mean"].to_dict() == pytest.approx({0: 0.70, 1: 0.95, 2: 0.75, 5: 0.85})
    # layer 0's validation: 0.70, 0.72, 0.74 -> mean .72, sd .02, t(0.975, 2) = 4.302653
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert (layers.loc[0, "val_low"], layers.loc[0, "val_high"]) == pytest.approx((0.72 - half, 0.72 + half), abs=1e-6)
    assert (layers.loc[2, "val_low"], layers.loc[2, "val_high"]) == pytest.approx((0.80, 0.80))  # constant
    for layer, row in layers.iterrows():
        assert row["test_low"] <= row["test_mean"] <= row["test_high"], layer


def test_stride_sweep_gives_the_same_swept_set(tmp_path):
    files = write_project(tmp_path)
    # all layers every 2nd from 0, plus the last: {0, 2, 4, 5}; layer 4 has no runs (e.g. failed)
    tables = tables_for(files, sweep={"layers": "all", "stride": 2})
    layers = tables["layers"].set_index("layer")
    assert layers["swept"].to_dict() == {0: True, 1: False, 2: True, 5: True}
    assert _by(tables["summary"], "method")["pifi_oracle"]["llm_layer"] == "2"
    assert set(tables["selectors"]["n_swept"]) == {3}


# --- other method sets ---------------------------------------------------------------------------

def test_without_sweep_no_oracle_and_no_regret(tmp_path):
    # what a run without pifi_sweep trains: the driving selector's layer and the last
    files = write_project(tmp_path, layers=(None, 0, 5))
    tables = tables_for(files, methods=["base", "pifi_last", "pifi_ilm"], sweep=None)
    assert list(tables["summary"]["method"]) == ["base", "pifi_last", "pifi_ilm"]
    assert [(r["a"], r["b"]) for r in tables["comparisons"].to_dict("records")] == [
        ("pifi_ilm", "base"), ("pifi_ilm", "pifi_last"), ("pifi_last", "base")]
    selectors = tables["selectors"]
    assert len(selectors) == len(SCORES)
    for column in ("regret", "rank", "spearman_rho", "oracle_layer", "n_swept"):
        assert all(_missing(v) for v in selectors[column]), column
    assert not tables["layers"]["swept"].any()
    report = markdown_report(tables)
    assert "nan" not in report.lower()
    assert "pifi_oracle" not in report.split("## Is the difference real?")[1]


def test_base_only_builds_without_selections(tmp_path):
    files = write_project(tmp_path, layers=(None,), selector=None)
    tables = build_tables(files["metrics"], [], [], methods=["base"], boot=BOOT)
    summary = tables["summary"]
    assert summary[["dataset", "slm", "llm", "method", "llm_layer"]].values.tolist() == [
        [DATASET, SLM, "-", "base", "-"]]
    assert summary["accuracy_mean"].iloc[0] == pytest.approx(0.52)
    assert all(len(tables[name]) == 0 for name in ("comparisons", "layers", "selectors", "selector_scores"))
    for name, table in tables.items():  # every table, even an empty one, has its header for the CSV
        assert len(table.columns) > 0, name
    report = markdown_report(tables)
    assert "| sst2 | tiny_bert | - | base | - | 3 | 52.00 ± 2.00 |" in report
    assert "## Which selector to trust" not in report


def test_load_runs_without_files_raises():
    with pytest.raises(ValueError, match="no runs"):
        load_runs([])


# --- markdown ------------------------------------------------------------------------------------

def test_markdown_report_carries_the_key_numbers(project):
    tables = project[1]
    report = markdown_report(tables)
    lines = report.splitlines()
    assert any(line.startswith("| sst2 | tiny_bert | tiny_qwen | pifi_oracle | 2 | 3 | 75.00 ± 0.00 |")
               for line in lines)
    assert any(line.startswith("| sst2 | tiny_bert | tiny_qwen | base | - | 3 | 52.00 ± 2.00 |") for line in lines)
    verdict = tables["comparisons"].set_index(["a", "b"]).loc[("pifi_ilm", "base"), "verdict"]
    assert f"| pifi_ilm − base | **{verdict}** |" in report  # significant: in bold
    ilm = next(line for line in lines if line.startswith("| sst2 | tiny_bert | tiny_qwen | **ilm_pc_patching** |"))
    cells = [c.strip() for c in ilm.split("|")[1:-1]]
    # layer, oracle, regret (pts, * = significant), interval, tied, rank, rho, tau, top 3, win rate, modal, converged
    assert cells[4:6] == ["0", "2"]
    assert cells[6] == "+5.00*"
    assert cells[8:] == ["no", "3/3", "-1.00", "-1.00", "yes", "60% (unstable)", "0", "yes"]
    probe = next(line for line in lines if "| probe_cv |" in line)
    assert "| +0.00 | +0.00 to +0.00 | yes | 1/3 | +1.00 |" in probe
    silhouette = next(line for line in lines if "| silhouette |" in line)
    cells = [c.strip() for c in silhouette.split("|")[1:-1]]
    assert cells[4:13] == ["3", "2", "-", "-", "-", "-", "+0.50", "+0.33", "yes"]
    assert "nan" not in report.lower()
    assert "| sst2 | tiny_bert | tiny_qwen | 1 | no | 3 | 95.00 | 95.00 |" in report
    assert "| sst2 | tiny_bert | tiny_qwen | 2 | yes | 3 | 80.00 | 75.00 |" in report


def _cells(report: str, selector: str) -> list[str]:
    line = next(line for line in report.splitlines() if f"| {selector} |" in line or f"| **{selector}** |" in line)
    return [c.strip() for c in line.split("|")[1:-1]]


def _header(report: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith("| dataset | SLM | LLM | selector |"))
    return [c.strip() for c in line.split("|")[1:-1]]


def _with(tables: dict, selector: str, **values) -> dict:
    """The tables with some of one selector's cells changed (the rendering is what is tested)."""
    selectors = tables["selectors"].copy()
    for column, value in values.items():
        selectors[column] = selectors[column].astype(object)
        selectors.loc[selectors["selector"] == selector, column] = value
    return {**tables, "selectors": selectors}


NO_SWEEP_SENTENCE = ("Oracle, regret, rank, ρ, τ and top 3 need the layer sweep (`pifi_sweep` in `run.methods`); "
                     "this run has none, so only each selector's choice and stability are shown.")


@pytest.fixture(scope="module")
def no_sweep_tables(tmp_path_factory):
    files = write_project(tmp_path_factory.mktemp("no_sweep"), layers=(None, 0, 5))
    return tables_for(files, methods=["base", "pifi_last", "pifi_ilm"], sweep=None)


def test_markdown_without_sweep_drops_the_sweep_columns_and_says_why(no_sweep_tables):
    report = markdown_report(no_sweep_tables)
    assert NO_SWEEP_SENTENCE in report.splitlines()
    assert _header(report) == ["dataset", "SLM", "LLM", "selector", "layer", "win rate", "modal", "probes converged"]
    assert _cells(report, "ilm_pc_patching") == [DATASET, SLM, LLM, "**ilm_pc_patching**", "0", "60% (unstable)",
                                                 "0", "yes"]
    assert _cells(report, "fisher") == [DATASET, SLM, LLM, "fisher", "1", "-", "-", "-"]
    assert "Regret =" not in report  # the sweep's columns are neither shown nor explained


def test_markdown_with_sweep_keeps_the_columns_and_no_sentence(project):
    report = markdown_report(project[1])
    assert "need the layer sweep" not in report
    assert _header(report)[5:13] == ["oracle", "regret (pts)", "interval", "tied", "rank", "ρ", "τ", "top 3"]


def test_markdown_names_the_groups_without_sweep_when_only_some_have_one(project):
    tables = project[1]
    other = tables["selectors"].assign(dataset="imdb", oracle_layer=None, regret=None, rank=None)
    mixed = {**tables, "selectors": pd.concat([tables["selectors"], other], ignore_index=True)}
    report = markdown_report(mixed)
    assert ("Oracle, regret, rank, ρ, τ and top 3 need the layer sweep (`pifi_sweep` in `run.methods`); "
            f"imdb / {SLM} / {LLM} has none, so only the choice and stability are shown there.") in report
    assert _header(report)[5] == "oracle"
    assert _cells(report, "ilm_pc_patching")[5] == "2"  # the first (swept) group's row


def test_markdown_explains_unconverged_probes_only_when_there_are_some(project):
    report = markdown_report(project[1])
    # probe_cv's probe did not converge on its last layer; fisher has no probe
    assert [_cells(report, name)[-1] for name in ("probe_cv", "ilm_pc_patching", "fisher")] == ["no¹", "yes", "-"]
    footnote = next(line for line in report.splitlines() if line.startswith("¹ no = "))
    assert "iteration limit" in footnote and "`PROBE_MAX_ITER`" in footnote and "no config key" in footnote
    converged = markdown_report(_with(project[1], "probe_cv", converged=True))
    assert _cells(converged, "probe_cv")[-1] == "yes"
    assert "¹" not in converged


@pytest.mark.parametrize("win_rate, cell, unstable", [
    (0.6, "60% (unstable)", True), (0.7, "70%", False), (0.9, "90%", False), (None, "-", False)])
def test_markdown_flags_unstable_choices(project, win_rate, cell, unstable):
    assert STABLE_WIN_RATE == 0.7
    assert win_rate_cell(win_rate) == cell
    tables = _with(project[1], "ilm_pc_patching", win_rate=win_rate)
    report = markdown_report(tables)
    assert _cells(report, "ilm_pc_patching")[13] == cell
    assert ("(unstable) = the chosen layer won fewer than 70% of the resampled selections" in report) == unstable
    verdict = next(line for line in report.splitlines() if line.startswith(f"- **{DATASET}**"))
    assert ("Unstable: layer 0 won only 60% of the resampled selections" in verdict) == unstable


def test_markdown_verdict_says_which_layer_and_whether_it_is_real(project):
    tables = project[1]
    report = markdown_report(tables)
    comparisons = tables["comparisons"].set_index(["a", "b"])
    selectors = _by(tables["selectors"], "selector")

    def interval(row):
        return difference_text(row["difference"], row["low"], row["high"])

    ilm = selectors["ilm_pc_patching"]
    regret = difference_text(ilm["regret"], ilm["regret_low"], ilm["regret_high"])
    assert interval(comparisons.loc[("pifi_ilm", "base")]).startswith("+18.0 [")
    assert regret.startswith("+5.0 [")
    expected = (f"- **{DATASET}** ({SLM} + {LLM}): `pifi_ilm` plugs in layer 0, chosen by ilm_pc_patching "
                "(test accuracy 70.0%). "
                f"`pifi_ilm` vs `base`: better ({interval(comparisons.loc[('pifi_ilm', 'base')])} points); "
                f"`pifi_ilm` vs `pifi_last`: worse ({interval(comparisons.loc[('pifi_ilm', 'pifi_last')])} points). "
                "The oracle is layer 2 (best validation accuracy of 3 swept layers); the chosen layer ranks 3 of 3; "
                f"regret {regret} points, significant: the chosen layer is really worse on test. "
                "Tied with the best on validation: layer 2; the chosen layer is not. "
                "Unstable: layer 0 won only 60% of the resampled selections, so other samples may choose another "
                "layer.")
    assert expected in report.splitlines()
    assert report.index("## Verdict") < report.index("## Methods")


@pytest.mark.parametrize("tied, tied_layers, words", [
    (False, "2", "Tied with the best on validation: layer 2; the chosen layer is not."),
    (True, "0 2", "Tied with the best on validation: layers 0 and 2; the chosen layer is one of them."),
    # a tied chosen layer missing from the (swept) tied set was trained beside the sweep: not "one of them"
    (True, "2", "Tied with the best on validation: layer 2; the chosen layer 0, outside the sweep, is not worse "
                "than the best either."),
])
def test_the_verdict_places_the_chosen_layer_against_the_tied_set(project, tied, tied_layers, words):
    report = markdown_report(_with(project[1], "ilm_pc_patching", tied=tied, tied_layers=tied_layers))
    verdict = next(line for line in report.splitlines() if line.startswith(f"- **{DATASET}**"))
    assert words in verdict


def test_markdown_verdict_without_sweep_has_no_regret(no_sweep_tables):
    report = markdown_report(no_sweep_tables)
    verdict = next(line for line in report.splitlines() if line.startswith(f"- **{DATASET}**"))
    assert "`pifi_ilm` vs `base`: better (+18.0 [" in verdict
    assert "oracle" not in verdict and "regret" not in verdict


def test_points_are_rounded_for_people():
    assert difference_text(0.07499999999999996, 0.040975000000000227, 0.11) == "+7.5 [+4.1, +11.0]"
    assert difference_text(-0.0001, -0.026000000000000023, 0.0) == "+0.0 [-2.6, +0.0]"  # never "-0.0"


# --- data checks ---------------------------------------------------------------------------------

def _info(root, dataset: str, *, train_test: int, validation_test: int = 0, dropped: int = 0, mode: str = "warn"):
    path = root / "results/data" / dataset / "info.json"
    write_json(path, {"dataset": dataset, "splits": {"test": {"rows": 50}},
                      "checks": {"split_overlap": {"mode": mode, "train_validation": 1, "train_test": train_test,
                                                   "validation_test": validation_test,
                                                   "test_rows_dropped": dropped}}})
    return str(path)


def test_test_rows_shared_with_train_are_a_warning_in_the_verdict(project, tmp_path):
    from pifi.report_page import report_page

    files = project[0]
    tables = build_tables(files["metrics"], files["selections"], files["scores"], methods=ALL_METHODS, sweep=SWEEP,
                          boot=BOOT, info_files=[_info(tmp_path, DATASET, train_test=3, validation_test=2)])
    assert tables["data_checks"].to_dict("records") == [
        {"dataset": DATASET, "test_rows": 50, "train_validation": 1, "train_test": 3, "validation_test": 2,
         "test_rows_dropped": 0, "split_overlap": "warn"}]
    warning = "Warning: test rows share their text with train (3) or validation (2) of 50"
    verdict = next(line for line in markdown_report(tables).splitlines() if line.startswith(f"- **{DATASET}**"))
    assert warning in verdict and verdict.endswith(f"(`split_overlap: warn`; `datasets.{DATASET}.split_overlap: drop_test` drops them): the test "
                                        "score partly measures memory.")
    page = report_page(tables, run={"datasets": [DATASET], "slms": [SLM], "llms": [LLM], "methods": ALL_METHODS,
                                    "seeds": [1, 2, 3]}, selection={"selector": "ilm_pc_patching", "selectors": [], "n_samples": 40,
                                               "split": "train"})
    assert warning in page.split("\nMethods\n")[0]  # on the first screen, in the verdict


def test_dropped_or_absent_overlap_reads_as_such(project, tmp_path):
    files = project[0]
    dropped = build_tables(files["metrics"], files["selections"], files["scores"], methods=ALL_METHODS, sweep=SWEEP,
                           boot=BOOT, info_files=[_info(tmp_path / "a", DATASET, train_test=4, dropped=4,
                                                        mode="drop_test")])
    assert "Warning: 4 test row(s) shared their text with train or validation and were dropped" in \
        markdown_report(dropped)
    clean = build_tables(files["metrics"], files["selections"], files["scores"], methods=ALL_METHODS, sweep=SWEEP,
                         boot=BOOT, info_files=[_info(tmp_path / "b", DATASET, train_test=0)])
    assert "share their text" not in markdown_report(clean)  # train-validation sharing alone is no test leakage


# --- layers tied with the best ------------------------------------------------------------------

def test_tied_set_by_hand():
    """oracle - layer on validation rows x seeds: identical or swapped rows are tied, 25 rows worse is not,
    and a layer better than the oracle (possible outside the sweep) is no miss either."""
    from pifi.stats import compare
    from pifi.summary import is_tied, tied_layers

    oracle = np.ones((3, 50), dtype=np.int8)
    oracle[:, 0] = 0
    same = oracle.copy()
    swapped = oracle.copy()
    swapped[:, 0], swapped[:, 1] = 1, 0  # right where the oracle is wrong, wrong on another row
    worse = oracle.copy()
    worse[:, 1:26] = 0
    better = np.ones((3, 50), dtype=np.int8)
    better[:, :1] = 1
    gaps = {layer: compare(oracle, correct, n_resamples=2000, seed=0)
            for layer, correct in ((0, same), (1, worse), (2, swapped), (3, better))}
    assert (gaps[1].difference, gaps[1].significant) == (0.5, True)
    assert gaps[3].difference == pytest.approx(-0.02) and not is_tied(gaps[1]) and is_tied(gaps[3])
    assert tied_layers(gaps, swept=[0, 1, 2]) == [0, 2]  # layer 3 is not swept


def test_sweep_judge_ties_and_hits_match_the_constructed_sweep(project):
    """Validation per swept layer {0: .72, 2: .80, 5: .76} on 100 rows x 3 seeds (first k rows right): the
    oracle is 2; layer 0 is 6 to 10 rows below it in every seed: not tied."""
    layers = project[1]["layers"].set_index("layer")
    assert bool(layers.loc[2, "tied"]) and not bool(layers.loc[0, "tied"])
    assert layers.loc[0, "val_gap"] == pytest.approx(0.08)  # (10 + 8 + 6) / 300
    assert layers.loc[1, "val_gap"] == pytest.approx(-0.15) and bool(layers.loc[1, "tied"])  # above the oracle
    selectors = _by(project[1]["selectors"], "selector")
    assert {name: selectors[name]["tied"] for name in ("ilm_pc_patching", "probe_cv", "fisher")} == {
        "ilm_pc_patching": False, "probe_cv": True, "fisher": True}
    assert selectors["silhouette"]["tied"] is None  # its layer 3 was never trained
    assert {r["tied_layers"] for r in selectors.values()} == {" ".join(map(str, sorted(
        layer for layer in (0, 2, 5) if bool(layers.loc[layer, "tied"]))))}
