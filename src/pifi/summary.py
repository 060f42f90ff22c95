"""The comparison table: one row per dataset x SLM x LLM x method, mean ± std over seeds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from pifi.artifacts import read_json

METRICS = ("accuracy", "macro_f1", "mcc")
METHOD_ORDER = {"base": 0, "pifi_last": 1, "pifi_ilm": 2}
KEYS = ["dataset", "slm", "llm", "method"]


def summarize_runs(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    runs = pd.DataFrame([read_json(path) for path in metrics_files])
    if runs.empty:
        raise ValueError("no runs to summarize")
    runs["llm"] = runs["llm"].fillna("-")
    grouped = runs.groupby(KEYS, sort=False)
    table = grouped.agg(
        n_seeds=("seed", "nunique"),
        **{f"{m}_mean": (m, "mean") for m in METRICS},
        **{f"{m}_std": (m, "std") for m in METRICS},
        llm_layer=("llm_layer", lambda s: "/".join(sorted({str(int(v)) for v in s.dropna()})) or "-"),
        trainable_params=("trainable_params", "first"),
        total_params=("total_params", "first"),
        train_seconds_mean=("train_seconds", "mean"),
    ).reset_index()
    # One seed has no spread; say 0 rather than NaN so the table reads cleanly.
    for m in METRICS:
        table[f"{m}_std"] = table[f"{m}_std"].fillna(0.0)
    table["_order"] = table["method"].map(METHOD_ORDER).fillna(99)
    return table.sort_values(["dataset", "slm", "llm", "_order"]).drop(columns="_order").reset_index(drop=True)


def selections_table(selection_files: Sequence[str | Path]) -> pd.DataFrame:
    rows = []
    for path in selection_files:
        s = read_json(path)
        rows.append({k: s.get(k) for k in ("dataset", "slm", "llm", "selector", "layer", "effect",
                                            "runner_up_layer", "margin", "win_rate", "last_layer_effect",
                                            "num_layers")})
    return pd.DataFrame(rows)


def _mean_std(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_report(table: pd.DataFrame, selections: pd.DataFrame) -> str:
    lines = ["# PiFi-ILM summary", "",
             "Test-split metrics in %, mean ± std over seeds. `pifi_last` plugs the LLM's last decoder layer "
             "(the paper's default); `pifi_ilm` the layer chosen by ILM layer selection.", "",
             "| dataset | SLM | LLM | method | LLM layer | seeds | accuracy | macro-F1 | MCC | trainable | total | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in table.itertuples():
        lines.append(
            f"| {row.dataset} | {row.slm} | {row.llm} | {row.method} | {row.llm_layer} | {row.n_seeds} | "
            f"{_mean_std(row.accuracy_mean, row.accuracy_std)} | {_mean_std(row.macro_f1_mean, row.macro_f1_std)} | "
            f"{_mean_std(row.mcc_mean, row.mcc_std)} | {row.trainable_params:,} | {row.total_params:,} | "
            f"{row.train_seconds_mean:.1f} |")
    if not selections.empty:
        lines += ["", "## Layer selection", "",
                  "Effects are probe-accuracy drops on the selection samples. A small margin over the runner-up "
                  "means the choice is fragile: it can move with the draw of samples. The win rate is how often "
                  "the layer also wins when the selection is redone on random subsets of the samples.", "",
                  "| dataset | SLM | LLM | selector | layer | effect | runner-up | margin | win rate | last-layer effect "
                  "| layers |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in selections.itertuples():
            margin = "-" if pd.isna(s.margin) else f"{s.margin:.4f}"
            runner_up = "-" if pd.isna(s.runner_up_layer) else int(s.runner_up_layer)
            win_rate = "-" if pd.isna(s.win_rate) else f"{100 * s.win_rate:.0f}%"
            lines.append(f"| {s.dataset} | {s.slm} | {s.llm} | {s.selector} | {s.layer} | {s.effect:.4f} | "
                         f"{runner_up} | {margin} | {win_rate} | {s.last_layer_effect:.4f} | {s.num_layers} |")
    return "\n".join(lines) + "\n"
