"""The two figures of one dataset x SLM x LLM: which layer (sweep and selectors), is it real (paired differences)."""

import pandas as pd

from pifi.artifacts import read_parquet
from pifi.job import start_job
from pifi.plots import paired_difference_rows, plot_layer_profile, plot_paired_differences

log = start_job(snakemake)
wc = snakemake.wildcards


def rows_of(path: str) -> pd.DataFrame:
    """This dataset x SLM x LLM's rows of a summary table."""
    table = read_parquet(path)
    return table[(table["dataset"] == wc.dataset) & (table["slm"] == wc.slm) & (table["llm"] == wc.llm)]


summary = read_parquet(snakemake.input.summary)
summary = summary[(summary["dataset"] == wc.dataset) & (summary["slm"] == wc.slm)
                  & summary["llm"].isin([wc.llm, "-"])]  # "-": base, when it has no LLM of its own
layer_of = dict(zip(summary["method"], summary["llm_layer"].astype(str)))
layers, scores = rows_of(snakemake.input.layers), rows_of(snakemake.input.scores)
selectors, comparisons = rows_of(snakemake.input.selectors), rows_of(snakemake.input.comparisons)

by_selector = scores.sort_values("layer").groupby("selector", sort=False)
selector_scores = {name: group["score"].tolist() for name, group in by_selector}
chosen = {name: int(group.loc[group["chosen"], "layer"].iloc[0])
          for name, group in by_selector if group["chosen"].any()}
chosen |= {name: int(layer) for name, layer in zip(selectors["selector"], selectors["layer"])}  # also score-less ones
depth = len(next(iter(selector_scores.values()))) if selector_scores else int(layers["layer"].max()) + 1
oracle = int(layer_of["pifi_oracle"]) if "pifi_oracle" in layer_of else None
title = f"{wc.dataset}: {wc.slm} + {wc.llm}"

plot_layer_profile(snakemake.output.layers, title=f"{title}: which layer",
                   sweep=layers[layers["swept"]].sort_values("layer"), selector_scores=selector_scores,
                   chosen=chosen, oracle_layer=oracle, last_layer=depth - 1, selectors=selectors)
rows = paired_difference_rows(comparisons, layer_of=layer_of, selectors=selectors)
plot_paired_differences(snakemake.output.methods, title=f"{title}: paired differences in test accuracy", rows=rows)
log.info("figures written: %s, %s (%d paired differences)", snakemake.output.layers, snakemake.output.methods,
         len(rows))
