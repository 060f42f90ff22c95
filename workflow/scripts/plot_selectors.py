"""The selectors x datasets figure: each selector's regret against the sweep's oracle, every dataset x SLM x LLM."""

from pifi.artifacts import read_parquet
from pifi.job import start_job
from pifi.plots import plot_selector_regret

log = start_job(snakemake)

selectors = read_parquet(snakemake.input.selectors)
plot_selector_regret(snakemake.output.figure, selectors=selectors,
                     title="Selectors x datasets: regret against the oracle (test accuracy, points)")
log.info("figure written: %s (%d selectors, %d dataset x SLM x LLM)", snakemake.output.figure,
         selectors["selector"].nunique(), len(selectors[["dataset", "slm", "llm"]].drop_duplicates()))
