"""The summary tables merged from the groups' (CSV for people and other tools, parquet with a checksum for the
figures), their Markdown reading and the HTML report's first page."""

import io
from pathlib import Path

import pandas as pd

from pifi.artifacts import read_json, read_parquet, write_json, write_parquet, write_text
from pifi.job import start_job
from pifi.report_page import report_page
from pifi.summary import Bootstrap, data_checks_table, merge_group_tables
from pifi.summary_text import markdown_report

log = start_job(snakemake)
p = snakemake.params
boot = Bootstrap(**p.bootstrap)
# results/summary/groups/{dataset}/{slm}/{llm}/{table}.parquet and .../runs.json
group_files = [Path(path) for path in snakemake.input.groups]
tables = merge_group_tables({(path.parts[-4:-1], path.stem): read_parquet(path)
                             for path in group_files if path.suffix == ".parquet"})
tables["data_checks"] = data_checks_table(snakemake.input.infos)
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
used = [read_json(path) for path in group_files if path.name == "runs.json"]
write_json(snakemake.output.runs, {
    **{key: list(dict.fromkeys(item for group in used for item in group[key]))
       for key in ("metrics", "selections", "scores", "races")},
    "statistics": p.bootstrap, "methods": p.run["methods"]})
report = markdown_report(tables, confidence=boot.confidence)
write_text(snakemake.output.markdown, report)
write_text(snakemake.output.page, report_page(tables, run=p.run, selection=p.selection, confidence=boot.confidence))
log.info("\n%s", report)
