"""Score a trained classifier on the test split: metrics as JSON, every row's prediction as parquet."""

import pandas as pd
from safetensors.torch import load_file
from transformers import AutoTokenizer

from pifi.artifacts import read_json, write_json, write_parquet
from pifi.data import cap_rows
from pifi.evaluation import classification_metrics, predictions_frame
from pifi.job import job_device, start_job
from pifi.model import ModelSpec, load_classifier
from pifi.training import encode_frame, make_loader, predict_proba

log = start_job(snakemake)
device = job_device(snakemake)
inp, p = snakemake.input, snakemake.params
saved = read_json(inp.spec)
spec = ModelSpec(**saved["model"])
model = load_classifier(spec, load_file(inp.checkpoint)).to(device)
tokenizer = AutoTokenizer.from_pretrained(spec.slm_path, trust_remote_code=spec.slm_trust_remote_code)
test = cap_rows(pd.read_parquet(inp.test), p.max_eval_samples, seed=0)
loader = make_loader(tokenizer, encode_frame(tokenizer, test, spec.max_length), p.eval_batch_size, shuffle=False)
probabilities = predict_proba(model, loader, device, progress=True)
labels = test["label"].to_numpy()
metrics = classification_metrics(labels, probabilities.argmax(axis=1))
history = read_json(inp.history)
result = {**saved["run"], **metrics, "test_rows": len(test), "best_epoch": history["best_epoch"],
          "train_seconds": history["train_seconds"], "trainable_params": saved["trainable_params"],
          "total_params": saved["total_params"]}
log.info("test metrics %s", metrics)
write_parquet(snakemake.output.predictions, predictions_frame(test["row_id"].tolist(), labels, probabilities))
write_json(snakemake.output.metrics, result)
