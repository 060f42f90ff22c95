"""Test metrics of one run, from the predictions its training job saved (no model load)."""

from pifi.artifacts import read_json, read_parquet, write_json
from pifi.evaluation import classification_metrics, num_classes_of, per_class_f1
from pifi.job import start_job

log = start_job(snakemake)
inp = snakemake.input
predictions = read_parquet(inp.predictions)
labels, predicted = predictions["label"].to_numpy(), predictions["prediction"].to_numpy()
num_classes = num_classes_of(predictions)  # all C classes, also one absent from test (pifi.evaluation)
metrics = {**classification_metrics(labels, predicted, num_classes),
           "f1_per_class": per_class_f1(labels, predicted, num_classes)}
saved, history = read_json(inp.spec), read_json(inp.history)
result = {**saved["run"], **metrics, "test_rows": len(predictions), "best_epoch": history["best_epoch"],
          "validation_accuracy": history["best_validation_accuracy"],
          "trainable_params": saved["trainable_params"], "total_params": saved["total_params"]}
log.info("test metrics %s", metrics)
write_json(snakemake.output.metrics, result)
