"""Load one dataset as configured and write its three splits as parquet, with stable row ids."""

from pifi.warm import warm_start

warm_start(snakemake)  # the rest runs in a warm server's fork, if one is up (pifi.warm)

from pifi.artifacts import write_json, write_parquet
from pifi.data import prepare_splits
from pifi.job import start_job

log = start_job(snakemake)
splits = prepare_splits(snakemake.wildcards.dataset, snakemake.params.spec,
                        validation_fraction=snakemake.params.validation_fraction, seed=snakemake.params.seed,
                        drop_blank_texts=snakemake.params.drop_blank_texts)
info = {"dataset": snakemake.wildcards.dataset, "source": snakemake.params.spec["source"],
        "num_labels": int(splits["train"]["label"].max()) + 1, "splits": {}}
for split, frame in splits.items():
    write_parquet(snakemake.output[split], frame)
    info["splits"][split] = {"rows": len(frame), "label_counts": frame["label"].value_counts().sort_index().to_dict()}
    log.info("%s: %d rows, labels %s", split, len(frame), info["splits"][split]["label_counts"])
write_json(snakemake.output.info, info)
