"""The two figures of one dataset x SLM x LLM: layer profile (sweep and selectors) and methods."""

import pandas as pd

from pifi.job import start_job
from pifi.plots import plot_layer_profile, plot_method_comparison

log = start_job(snakemake)
wc = snakemake.wildcards


def rows_of(path: str) -> pd.DataFrame:
    table = pd.read_csv(path)
    keep = (table["dataset"] == wc.dataset) & (table["slm"] == wc.slm)
    return table[keep & (table["llm"] == wc.llm)] if "llm" in table else table[keep]


summary = pd.read_csv(snakemake.input.summary)
summary = summary[(summary["dataset"] == wc.dataset) & (summary["slm"] == wc.slm)
                  & summary["llm"].isin([wc.llm, "-"])]
layers, scores = rows_of(snakemake.input.layers), rows_of(snakemake.input.scores)
by_method = summary.set_index("method")["llm_layer"].astype(str)
oracle = int(by_method["pifi_oracle"]) if "pifi_oracle" in by_method else None
selector_scores = {name: group.sort_values("layer")["score"].tolist() for name, group in scores.groupby("selector")}
chosen = {name: int(group.loc[group["chosen"], "layer"].iloc[0]) for name, group in scores.groupby("selector")}
depth = len(next(iter(selector_scores.values()))) if selector_scores else int(layers["layer"].max()) + 1
title = f"{wc.dataset}: {wc.slm} + {wc.llm}"
plot_layer_profile(snakemake.output.layers, title=f"{title}, per LLM layer",
                   sweep=layers[layers["swept"]].sort_values("layer"), selector_scores=selector_scores,
                   chosen=chosen, oracle_layer=oracle, last_layer=depth - 1)
methods = pd.DataFrame({
    "method": summary["method"],
    "label": [m if layer == "-" else f"{m} (layer {layer})" for m, layer in zip(summary["method"], summary["llm_layer"])],
    "accuracy": summary["accuracy_mean"], "low": summary["accuracy_low"], "high": summary["accuracy_high"]})
plot_method_comparison(snakemake.output.methods, title=f"{title}: test accuracy", methods=methods)
log.info("figures written: %s, %s", snakemake.output.layers, snakemake.output.methods)
