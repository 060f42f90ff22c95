"""Pick the layer pifi_ilm trains, and record every compared selector's choice."""

from pifi.artifacts import read_json, write_json
from pifi.job import start_job
from pifi.selection_record import selection_record

log = start_job(snakemake)
wc = snakemake.wildcards
reports = {name: read_json(path) for name, path in snakemake.input.items()}
selection = selection_record(reports, snakemake.params.selector, dataset=wc.dataset, slm=wc.slm, llm=wc.llm,
                             rule=snakemake.params.choice)
for name, choice in selection["choices"].items():
    log.info("%-16s layer %2d (margin %s, win rate %s)", name, choice["layer"], choice["margin"], choice["win_rate"])
log.info("pifi_ilm trains layer %d (selector %s, %s)", selection["layer"], selection["selector"], selection["rule"])
write_json(snakemake.output.selection, selection)
