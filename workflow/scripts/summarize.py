"""The comparison table over every run: CSV for machines, Markdown for people."""

from pifi.artifacts import write_text
from pifi.job import start_job
from pifi.summary import markdown_report, selections_table, summarize_runs

log = start_job(snakemake)
table = summarize_runs(snakemake.input.metrics)
selections = selections_table(snakemake.input.selections)
write_text(snakemake.output.csv, table.to_csv(index=False))
report = markdown_report(table, selections)
write_text(snakemake.output.markdown, report)
log.info("\n%s", report)
