"""The summary tables (CSV for people and other tools, parquet with a checksum for the figures), their Markdown
reading and the HTML report's first page."""

import io

import pandas as pd

from pifi.artifacts import write_json, write_parquet, write_text
from pifi.job import start_job
from pifi.report_page import report_page
from pifi.summary import Bootstrap, build_tables
from pifi.summary_text import markdown_report

log = start_job(snakemake)
p = snakemake.params
boot = Bootstrap(**p.bootstrap)
metrics = dict.fromkeys([*snakemake.input.base_metrics, *snakemake.input.planned_pifi_metrics,
                         *snakemake.input.chosen_pifi_metrics, *snakemake.input.race_pifi_metrics])  # each run once
tables = build_tables(list(metrics), snakemake.input.selections, snakemake.input.scores, methods=p.methods,
                      sweep=p.sweep, boot=boot, info_files=snakemake.input.infos, race_files=snakemake.input.races)
for name, table in tables.items():
    text = table.to_csv(index=False)
    write_text(snakemake.output[name], text)
    # The figures read the parquet (verified on read): the CSV's content, parsed back. Text columns stay
    # text (a dataset named "NA" or "2024" is a name), and only an empty cell is missing.
    text_columns = {column: str for column in table.columns if table[column].dtype == object}
    write_parquet(snakemake.output[f"{name}_parquet"],
                  pd.read_csv(io.StringIO(text), dtype=text_columns, keep_default_na=False, na_values=[""]))
# What the tables were computed from, for tools that judge them again (benchmarks/selectors_leaderboard.py):
# a project directory may hold runs of other configs.
write_json(snakemake.output.runs, {"metrics": list(metrics), "selections": list(snakemake.input.selections),
                                   "races": list(snakemake.input.races), "statistics": p.bootstrap,
                                   "methods": p.methods})
report = markdown_report(tables, confidence=boot.confidence)
write_text(snakemake.output.markdown, report)
write_text(snakemake.output.page, report_page(tables, run=p.run, selection=p.selection, confidence=boot.confidence))
log.info("\n%s", report)
