"""Load one dataset as configured and write its three splits as parquet, with stable row ids."""

from pifi.artifacts import write_json, write_parquet
from pifi.data import overlap_line, prepare_dataset
from pifi.job import config_base, console_line, start_job

log = start_job(snakemake)
p = snakemake.params
settings = p.data
# The checks (texts shared between splits, train classes absent from validation or test) are
# warnings in this log and counts in info.json; data.split_overlap can make test leakage an error.
splits, checks = prepare_dataset(snakemake.wildcards.dataset, p.spec, validation_fraction=settings["validation_fraction"],
                                 seed=settings["seed"], drop_blank_texts=settings["drop_blank_texts"],
                                 split_overlap_mode=settings["split_overlap"], base_dir=config_base(snakemake))
info = {"dataset": snakemake.wildcards.dataset, "source": p.spec["source"],
        "num_labels": int(splits["train"]["label"].max()) + 1, "splits": {}, "checks": checks}
for split, frame in splits.items():
    write_parquet(snakemake.output[split], frame)
    info["splits"][split] = {"rows": len(frame), "label_counts": frame["label"].value_counts().sort_index().to_dict()}
    log.info("%s: %d rows, labels %s", split, len(frame), info["splits"][split]["label_counts"])
write_json(snakemake.output.info, info)
line = overlap_line(snakemake.wildcards.dataset, checks["split_overlap"], test_rows=len(splits["test"]))
if line:
    console_line(line)  # leakage is the user's business, not only the log's
