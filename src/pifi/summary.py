"""The tables that answer the project's question: is the selected layer a good one?

From every run's metrics and saved test predictions, per dataset x SLM x LLM:
- ``summary``: each method's test metrics (mean ± std over seeds) with a 95% bootstrap interval, and its
  cost in training runs (pifi_race: successive halving over the swept layers, next to the sweep's);
- ``comparisons``: pifi_ilm - base, pifi_ilm - pifi_last, pifi_last - base and the regret
  (oracle - pifi_ilm), each a paired bootstrap over test rows and seeds, named a win only when the
  interval excludes 0;
- ``layers``: the sweep per layer (validation and test accuracy with intervals), each layer's validation gap
  to the oracle and whether it is *tied with the best* (the gap's paired interval contains 0);
- ``selectors``: every selector's choice, its regret against the oracle, its rank in the sweep,
  the Spearman rho and Kendall tau of its scores with the sweep's validation accuracy, whether the
  oracle is among its 3 best-scored swept layers, whether its layer is tied with the best (a "hit"), and
  its stability;
- ``selector_scores``: every selector's score per layer (for the figures);
- ``data_checks``: per dataset, texts shared between splits (test leakage), from info.json.
The oracle layer is the best swept layer by mean *validation* accuracy; its *test* accuracy is the bar.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from pifi.artifacts import read_json, read_parquet
from pifi.config import sweep_layer_set
from pifi.stats import Comparison, accuracy_ci, compare, in_top, kendall, oracle_layer, rank_of, spearman

METRICS = ("accuracy", "macro_f1", "mcc")
METHOD_ORDER = ("base", "pifi_last", "pifi_ilm", "pifi_race", "pifi_oracle")
COMPARISONS = (("pifi_ilm", "base"), ("pifi_ilm", "pifi_last"), ("pifi_last", "base"), ("pifi_oracle", "pifi_ilm"),
               ("pifi_race", "base"), ("pifi_oracle", "pifi_race"))
GROUP = ["dataset", "slm", "llm"]


@dataclass(frozen=True)
class Bootstrap:
    n_resamples: int = 10_000
    confidence: float = 0.95
    seed: int = 0


def load_runs(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: its metrics.json and where its predictions are."""
    rows = []
    for path in metrics_files:
        run = read_json(path)
        run["predictions"] = str(Path(path).with_name("predictions.parquet"))
        run["validation_predictions"] = str(Path(path).with_name("validation_predictions.parquet"))
        rows.append(run)
    if not rows:
        raise ValueError("no runs to summarize")
    runs = pd.DataFrame(rows)
    runs["llm_layer"] = runs["llm_layer"].astype("Int64")
    return runs


def correctness(runs: pd.DataFrame, split: str = "test") -> np.ndarray:
    """Seeds x rows 0/1 matrix of the runs' test (or validation) predictions, seeds sorted, rows by row id."""
    matrices = []
    column = {"test": "predictions", "validation": "validation_predictions"}[split]
    for path in runs.sort_values("seed")[column]:
        frame = read_parquet(path, columns=["row_id", "label", "prediction"]).sort_values("row_id")
        matrices.append((frame["label"] == frame["prediction"]).to_numpy(dtype=np.int8))
    return np.stack(matrices)


def method_runs(runs: pd.DataFrame, selections: Mapping[tuple[str, str, str], Mapping], methods: Sequence[str],
                races: Mapping[tuple[str, str, str], Mapping] | None = None,
                judged: Mapping[tuple[str, str, str], Mapping] | None = None,
                ) -> dict[tuple[str, str, str, str], pd.DataFrame]:
    """{(dataset, slm, llm, method): its runs}: each method is a view of base or of one PiFi layer;
    pifi_oracle's layer is the oracle of ``judged`` (``sweep_judge``)."""
    races, judged = races or {}, judged or {}
    views = {}
    pifi = runs[runs["method"] == "pifi"]
    for (dataset, slm, llm), group in pifi.groupby(GROUP, sort=True):
        base = runs[(runs["method"] == "base") & (runs["dataset"] == dataset) & (runs["slm"] == slm)]
        layer_of = {}
        if "base" in methods and len(base):
            views[(dataset, slm, llm, "base")] = base
        if "pifi_last" in methods:
            layer_of["pifi_last"] = int(group["num_layers"].iloc[0]) - 1
        if "pifi_ilm" in methods:
            layer_of["pifi_ilm"] = int(selections[(dataset, slm, llm)]["layer"])
        if "pifi_race" in methods:
            layer_of["pifi_race"] = int(races[(dataset, slm, llm)]["layer"])
        if (dataset, slm, llm) in judged:  # sweep_judge judges only groups with a sweep
            layer_of["pifi_oracle"] = judged[(dataset, slm, llm)]["oracle"]
        for method, layer in layer_of.items():
            views[(dataset, slm, llm, method)] = group[group["llm_layer"] == layer]
    for (dataset, slm), base in runs[runs["method"] == "base"].groupby(["dataset", "slm"], sort=True):
        if not any(k[:2] == (dataset, slm) for k in views):  # base alone: no LLM in the run
            views[(dataset, slm, "-", "base")] = base
    return views


def swept_validation(group: pd.DataFrame, selection: Mapping | None) -> dict[int, float]:
    """Mean validation accuracy per swept layer (the layers the sweep trained, not the extra ones)."""
    swept = set(selection.get("swept_layers", [])) if selection else set()
    layers = group if not swept else group[group["llm_layer"].isin(swept)]
    return layers.groupby("llm_layer")["validation_accuracy"].mean().astype(float).to_dict()


def summary_table(views: Mapping[tuple, pd.DataFrame], boot: Bootstrap,
                  training_runs: Mapping[tuple, float] | None = None) -> pd.DataFrame:
    """Each method's test metrics; ``training_runs``: what it cost in whole training runs (one per seed,
    the sweep's layers x seeds for the oracle, the race's run-equivalents), default one per seed."""
    training_runs = training_runs or {}
    rows = []
    for (dataset, slm, llm, method), runs in views.items():
        low, high = accuracy_ci(correctness(runs), n_resamples=boot.n_resamples, seed=boot.seed,
                                confidence=boot.confidence)
        layer = runs["llm_layer"].iloc[0]
        rows.append({"dataset": dataset, "slm": slm, "llm": llm, "method": method,
                     "llm_layer": "-" if pd.isna(layer) else str(int(layer)), "n_seeds": runs["seed"].nunique(),
                     **{f"{m}_mean": runs[m].mean() for m in METRICS},
                     **{f"{m}_std": runs[m].std(ddof=1) if len(runs) > 1 else 0.0 for m in METRICS},
                     "accuracy_low": low, "accuracy_high": high,
                     "validation_accuracy_mean": runs["validation_accuracy"].mean(),
                     "trainable_params": int(runs["trainable_params"].iloc[0]),
                     "total_params": int(runs["total_params"].iloc[0]),
                     "training_runs": float(training_runs.get((dataset, slm, llm, method), runs["seed"].nunique()))})
    table = pd.DataFrame(rows)
    table["_order"] = table["method"].map({m: i for i, m in enumerate(METHOD_ORDER)})
    return table.sort_values(GROUP + ["_order"]).drop(columns="_order").reset_index(drop=True)


def comparisons_table(views: Mapping[tuple, pd.DataFrame], boot: Bootstrap) -> pd.DataFrame:
    rows = []
    for dataset, slm, llm in sorted({k[:3] for k in views}):
        for a, b in COMPARISONS:
            if (dataset, slm, llm, a) not in views or (dataset, slm, llm, b) not in views:
                continue
            result = _compare(views[(dataset, slm, llm, a)], views[(dataset, slm, llm, b)], boot)
            rows.append({"dataset": dataset, "slm": slm, "llm": llm, "a": a, "b": b,
                         "difference": result.difference, "low": result.low, "high": result.high,
                         "significant": result.significant, "verdict": result.verdict(a, b)})
    return pd.DataFrame(rows, columns=["dataset", "slm", "llm", "a", "b", "difference", "low", "high",
                                       "significant", "verdict"])


def _compare(runs_a: pd.DataFrame, runs_b: pd.DataFrame, boot: Bootstrap) -> Comparison:
    return compare(correctness(runs_a), correctness(runs_b), n_resamples=boot.n_resamples, seed=boot.seed,
                   confidence=boot.confidence)


def regret(by_layer: Mapping[int, pd.DataFrame], oracle: int, layer: int, boot: Bootstrap) -> Comparison:
    """oracle - layer in test accuracy, paired over test rows and seeds: above 0 the layer is worse."""
    return _compare(by_layer[oracle], by_layer[layer], boot)


def gaps_to_oracle(by_layer: Mapping[int, pd.DataFrame], oracle: int, boot: Bootstrap) -> dict[int, Comparison]:
    """Per trained layer: oracle - layer in *validation* accuracy, paired over validation rows and seeds.

    The oracle was chosen on validation, so it is judged there too; a layer whose gap is not significant
    is *tied with the best*: the sweep cannot tell it from the oracle.
    """
    oracle_correct = correctness(by_layer[oracle], "validation")
    return {layer: compare(oracle_correct, correctness(runs, "validation"), n_resamples=boot.n_resamples,
                           seed=boot.seed, confidence=boot.confidence)
            for layer, runs in sorted(by_layer.items())}


def is_tied(gap: Comparison) -> bool:
    """Tied with the best: not significantly below the oracle on validation (a layer outside the sweep
    may even be significantly above it)."""
    return not (gap.significant and gap.difference > 0)


def tied_layers(gaps: Mapping[int, Comparison], swept: Iterable[int]) -> list[int]:
    """The swept layers tied with the best (the oracle among them)."""
    return sorted(layer for layer in swept if layer in gaps and is_tied(gaps[layer]))


def sweep_judge(runs: pd.DataFrame, selections: Mapping[tuple, Mapping], boot: Bootstrap,
                ) -> dict[tuple[str, str, str], dict]:
    """Per (dataset, SLM, LLM) with a sweep: its runs by layer, validation by swept layer, the oracle,
    every trained layer's validation gap to it and the tied set. The one place these are computed:
    the tables, summary.md, the report and the leaderboard all read them from here."""
    judged = {}
    for key, group in runs[runs["method"] == "pifi"].groupby(GROUP, sort=True):
        selection = selections.get(key)
        if not selection or not selection.get("swept_layers"):
            continue
        by_layer = {int(layer): frame for layer, frame in group.groupby("llm_layer")}
        val_by_layer = swept_validation(group, selection)
        oracle = oracle_layer(val_by_layer)
        gaps = gaps_to_oracle(by_layer, oracle, boot)
        judged[key] = {"by_layer": by_layer, "validation": val_by_layer, "oracle": oracle, "gaps": gaps,
                       "tied": tied_layers(gaps, val_by_layer)}
    return judged


def layers_table(runs: pd.DataFrame, selections: Mapping[tuple, Mapping], boot: Bootstrap,
                 judged: Mapping[tuple, Mapping] | None = None) -> pd.DataFrame:
    """Every trained PiFi layer: validation (t-interval over seeds) and test (bootstrap) accuracy; with a
    sweep, its validation gap to the oracle and whether it is tied with the best."""
    judged = judged or {}
    rows = []
    for (dataset, slm, llm, layer), group in runs[runs["method"] == "pifi"].groupby(GROUP + ["llm_layer"]):
        low, high = accuracy_ci(correctness(group), n_resamples=boot.n_resamples, seed=boot.seed,
                                confidence=boot.confidence)
        val_low, val_high = _t_interval(group["validation_accuracy"].to_numpy(float), boot.confidence)
        swept = selections.get((dataset, slm, llm), {}).get("swept_layers", [])
        gap = judged.get((dataset, slm, llm), {}).get("gaps", {}).get(int(layer))
        rows.append({"dataset": dataset, "slm": slm, "llm": llm, "layer": int(layer), "swept": int(layer) in swept,
                     "n_seeds": group["seed"].nunique(), "val_mean": group["validation_accuracy"].mean(),
                     "val_low": val_low, "val_high": val_high, "test_mean": group["accuracy"].mean(),
                     "test_low": low, "test_high": high,
                     "val_gap": None if gap is None else gap.difference,
                     "val_gap_low": None if gap is None else gap.low, "val_gap_high": None if gap is None else gap.high,
                     "tied": None if gap is None else is_tied(gap)})
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


LAYER_COLUMNS = ["dataset", "slm", "llm", "layer", "swept", "n_seeds", "val_mean", "val_low", "val_high", "test_mean",
                 "test_low", "test_high", "val_gap", "val_gap_low", "val_gap_high", "tied"]


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    mean = float(values.mean())
    if len(values) < 2 or values.std() == 0:
        return mean, mean
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean - half, mean + half


SELECTOR_COLUMNS = ["dataset", "slm", "llm", "selector", "drives_pifi_ilm", "layer", "margin", "win_rate",
                    "modal_layer", "converged", "oracle_layer", "rank", "n_swept", "spearman_rho", "kendall_tau",
                    "oracle_in_top3", "regret", "regret_low", "regret_high", "regret_significant", "tied",
                    "tied_layers"]


def selectors_table(runs: pd.DataFrame, selections: Mapping[tuple, Mapping], scores: Mapping[tuple, Mapping],
                    boot: Bootstrap, *, judged: Mapping[tuple, Mapping]) -> pd.DataFrame:
    """Every selector's choice and, with a sweep (``judged``: ``sweep_judge``), how it fares against the oracle:
    regret on test, and whether its layer is tied with the best on validation (a "hit")."""
    rows = []
    for (dataset, slm, llm), selection in sorted(selections.items()):
        judge = judged.get((dataset, slm, llm))
        group = runs[(runs["method"] == "pifi") & (runs["dataset"] == dataset) & (runs["slm"] == slm)
                     & (runs["llm"] == llm)]
        val_by_layer = judge["validation"] if judge else {}
        oracle = judge["oracle"] if judge else None
        for name, choice in selection["choices"].items():
            layer = choice["layer"]
            row = {"dataset": dataset, "slm": slm, "llm": llm, "selector": name,
                   "drives_pifi_ilm": name == selection["selector"], "layer": layer, "margin": choice["margin"],
                   "win_rate": choice["win_rate"], "modal_layer": choice["modal_layer"],
                   "converged": _all_converged(scores.get((dataset, slm, llm, name))),
                   "oracle_layer": oracle, "rank": None, "n_swept": len(val_by_layer) or None, "spearman_rho": None,
                   "kendall_tau": None, "oracle_in_top3": None, "regret": None, "regret_low": None,
                   "regret_high": None, "regret_significant": None, "tied": None,
                   "tied_layers": None if judge is None else " ".join(map(str, judge["tied"]))}
            report = scores.get((dataset, slm, llm, name))
            if oracle is not None and report is not None:  # these need the scores, not the chosen layer's runs
                row.update(spearman_rho=spearman(report["scores"], val_by_layer),
                           kendall_tau=kendall(report["scores"], val_by_layer),
                           # among the swept layers: the ones the oracle was chosen from
                           oracle_in_top3=in_top(3, oracle, report["scores"], val_by_layer))
            if judge is not None and layer in judge["by_layer"]:
                chosen_runs = judge["by_layer"][layer]
                lost = regret(judge["by_layer"], oracle, layer, boot)
                row.update(rank=rank_of(layer, chosen_runs["validation_accuracy"].mean(), val_by_layer),
                           regret=lost.difference, regret_low=lost.low, regret_high=lost.high,
                           regret_significant=lost.significant, tied=is_tied(judge["gaps"][layer]))
            rows.append(row)
    return pd.DataFrame(rows, columns=SELECTOR_COLUMNS)


def _all_converged(report: Mapping | None) -> bool | None:
    converged = None if report is None else report.get("converged")
    return None if converged is None else all(converged)


def selector_scores_table(scores: Mapping[tuple, Mapping], selections: Mapping[tuple, Mapping]) -> pd.DataFrame:
    rows = []
    for (dataset, slm, llm, name), report in sorted(scores.items()):
        chosen = selections[(dataset, slm, llm)]["choices"][name]["layer"]
        rows += [{"dataset": dataset, "slm": slm, "llm": llm, "selector": name, "layer": layer, "score": score,
                  "chosen": layer == chosen} for layer, score in enumerate(report["scores"])]
    return pd.DataFrame(rows, columns=["dataset", "slm", "llm", "selector", "layer", "score", "chosen"])


DATA_CHECK_COLUMNS = ["dataset", "test_rows", "train_validation", "train_test", "validation_test",
                      "test_rows_dropped", "split_overlap"]


def data_checks_table(info_files: Iterable[str | Path]) -> pd.DataFrame:
    """Per dataset, from prepare_data's info.json (read verified): rows of one split whose text another
    split also holds (``train_test`` = test rows also in train, ...), and test rows dropped for it."""
    rows = []
    for path in info_files:
        info = read_json(path)
        overlap = info["checks"]["split_overlap"]
        rows.append({"dataset": info["dataset"], "test_rows": int(info["splits"]["test"]["rows"]),
                     **{pair: int(overlap[pair]) for pair in ("train_validation", "train_test", "validation_test",
                                                              "test_rows_dropped")},
                     "split_overlap": overlap["mode"]})
    return pd.DataFrame(rows, columns=DATA_CHECK_COLUMNS).sort_values("dataset").reset_index(drop=True)


def read_by_group(paths: Iterable[str | Path]) -> dict[tuple[str, str, str], dict]:
    """{(dataset, slm, llm): the file}, for files that name their group (selection.json, race.json)."""
    by_group = {}
    for path in paths:
        record = read_json(path)
        by_group[(record["dataset"], record["slm"], record["llm"])] = record
    return by_group


read_selections = read_by_group  # every selector's choice per group
read_races = read_by_group  # the race's layer and its cost in run-equivalents per group


def read_scores(paths: Iterable[str | Path], selections: Mapping[tuple, Mapping]) -> dict[tuple, dict]:
    """{(dataset, slm, llm, selector): score file}; a scores file has no SLM, so it serves every SLM."""
    by_key = {}
    for path in paths:
        report = read_json(path)
        for dataset, slm, llm in selections:
            if report["dataset"] == dataset and report["llm_type"] == llm and report.get("slm_type", slm) == slm:
                by_key[(dataset, slm, llm, report["selector"])] = report
    return by_key


def merge_group_tables(tables: Mapping[tuple[tuple[str, ...], str], pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """{((dataset, slm, llm), table name): that group's table} -> {table name: every group's rows}, groups in
    sorted order, as ``build_tables`` over all of them at once orders its rows."""
    merged = {}
    for name in dict.fromkeys(name for _, name in tables):
        frames = [tables[key] for key in sorted(key for key in tables if key[1] == name)]
        rows = [frame for frame in frames if len(frame)] or frames[:1]  # empty frames would only blur dtypes
        merged[name] = pd.concat(rows, ignore_index=True)
    return merged


def build_tables(metrics_files: Sequence[str | Path], selection_files: Sequence[str | Path],
                 score_files: Sequence[str | Path], *, methods: Sequence[str], sweep: Mapping | None = None,
                 boot: Bootstrap = Bootstrap(), info_files: Sequence[str | Path] = (),
                 race_files: Sequence[str | Path] = ()) -> dict[str, pd.DataFrame]:
    """Every summary table, from the run files and the datasets' info.json; ``sweep`` is the config's
    sweep section."""
    runs = load_runs(metrics_files)
    selections = read_selections(selection_files)
    if "pifi_sweep" in methods:
        depths = runs[runs["method"] == "pifi"].groupby(GROUP)["num_layers"].first()
        for key, depth in depths.items():
            selections.setdefault(key, {"choices": {}, "dataset": key[0], "slm": key[1], "llm": key[2]})
            selections[key]["swept_layers"] = sweep_layer_set(sweep or {"layers": "all", "stride": 1}, int(depth))
    scores = read_scores(score_files, selections)
    races = read_races(race_files)
    judged = sweep_judge(runs, selections, boot) if "pifi_sweep" in methods else {}
    views = method_runs(runs, selections, methods, races, judged)
    costs = {(*key, "pifi_race"): race["cost_runs"] for key, race in races.items()}
    costs |= {(*key, "pifi_oracle"): len(judge["validation"]) * views[(*key, "pifi_oracle")]["seed"].nunique()
              for key, judge in judged.items() if (*key, "pifi_oracle") in views}
    return {"summary": summary_table(views, boot, costs), "comparisons": comparisons_table(views, boot),
            "layers": layers_table(runs, selections, boot, judged),
            "selectors": selectors_table(runs, selections, scores, boot, judged=judged),
            "selector_scores": selector_scores_table(scores, selections),
            "data_checks": data_checks_table(info_files)}
