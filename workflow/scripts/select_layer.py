"""Pick the layer to plug in from the per-layer effects."""

from pifi.artifacts import read_json, write_json
from pifi.job import start_job
from pifi.selection import select_from_report

log = start_job(snakemake)
selection = select_from_report(read_json(snakemake.input.effects))
log.info("selected %s", selection)
write_json(snakemake.output.selection, selection)
