"""Test metrics of one run, from the predictions its training job saved (no model load)."""

from pifi.warm import warm_start

warm_start(snakemake)  # the rest runs in a warm server's fork, if one is up (pifi.warm)

import pandas as pd

from pifi.artifacts import read_json, write_json
from pifi.evaluation import classification_metrics
from pifi.job import start_job

log = start_job(snakemake)
inp = snakemake.input
predictions = pd.read_parquet(inp.predictions)
metrics = classification_metrics(predictions["label"].to_numpy(), predictions["prediction"].to_numpy())
saved, history = read_json(inp.spec), read_json(inp.history)
result = {**saved["run"], **metrics, "test_rows": len(predictions), "best_epoch": history["best_epoch"],
          "validation_accuracy": history["best_validation_accuracy"],
          "trainable_params": saved["trainable_params"], "total_params": saved["total_params"]}
log.info("test metrics %s", metrics)
write_json(snakemake.output.metrics, result)
