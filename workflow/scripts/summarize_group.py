"""One (dataset, SLM, LLM) group's summary tables, from its runs, selection, scores and race; summarize merges them."""

from pifi.artifacts import write_json, write_parquet
from pifi.job import start_job
from pifi.summary import Bootstrap, build_tables

log = start_job(snakemake)
inp, p = snakemake.input, snakemake.params
# Each run once (a layer can be the last, swept and a selector's), its metrics.json naming its predictions.
metrics = list(dict.fromkeys(path for kind in inp.keys() if kind.endswith("_runs") for path in inp[kind]
                             if path.endswith("metrics.json")))
tables = build_tables(metrics, inp.selection, inp.scores, methods=p.methods, sweep=p.sweep,
                      boot=Bootstrap(**p.bootstrap), race_files=inp.race)
for name in snakemake.output.keys():
    if name != "runs":
        write_parquet(snakemake.output[name], tables[name])
write_json(snakemake.output.runs, {"metrics": metrics, "selections": list(inp.selection), "scores": list(inp.scores),
                                   "races": list(inp.race)})
log.info("%s/%s + %s: %d runs summarized", *snakemake.wildcards, len(metrics))
