"""The summary tables (CSV for machines) and their Markdown reading (for people)."""

from pifi.artifacts import write_text
from pifi.job import start_job
from pifi.summary import Bootstrap, build_tables, markdown_report

log = start_job(snakemake)
p = snakemake.params
boot = Bootstrap(**p.bootstrap)
tables = build_tables([*snakemake.input.base_metrics, *snakemake.input.planned_pifi_metrics,
                      *snakemake.input.chosen_pifi_metrics], snakemake.input.selections, snakemake.input.scores,
                      methods=p.methods, sweep=p.sweep, boot=boot)
for name, table in tables.items():
    write_text(snakemake.output[name], table.to_csv(index=False))
report = markdown_report(tables, confidence=boot.confidence)
write_text(snakemake.output.markdown, report)
log.info("\n%s", report)
