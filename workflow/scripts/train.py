"""Fine-tune one classifier (base, or PiFi with the last or the selected LLM layer) and save it."""

import pandas as pd
from transformers import AutoTokenizer

from pifi.artifacts import read_json, write_json, write_safetensors
from pifi.data import cap_rows
from pifi.job import job_device, start_job
from pifi.model import ModelSpec, build_classifier, count_parameters
from pifi.model_sources import ModelRef
from pifi.training import TrainingConfig, seed_everything, train_classifier

log = start_job(snakemake)
device = job_device(snakemake)
wc, inp, t = snakemake.wildcards, snakemake.input, snakemake.params.training
method, seed = wc.get("method", "base"), int(wc.seed)

llm_path, layer, llm_remote_code = None, None, False
if method != "base":
    llm = ModelRef.from_manifest(inp.llm)
    layer = read_json(inp.selection)["layer"] if method == "pifi_ilm" else llm.num_layers - 1
    llm_path, llm_remote_code = str(llm.path), llm.trust_remote_code
    llm.check_layer(layer)
    log.info("plugging layer %d of %s (%d layers)", layer, llm.name, llm.num_layers)

slm = ModelRef.from_manifest(inp.slm)
spec = ModelSpec(method=method, slm_path=str(slm.path), num_labels=read_json(inp.info)["num_labels"],
                 dropout=t["dropout"], llm_path=llm_path, llm_layer=layer, max_length=t["max_length"],
                 slm_trust_remote_code=slm.trust_remote_code, llm_trust_remote_code=llm_remote_code)
seed_everything(seed)  # the new head and projections start from the run's seed
model = build_classifier(spec)
params = count_parameters(model)
log.info("parameters: %s", params)

tokenizer = AutoTokenizer.from_pretrained(slm.path, trust_remote_code=slm.trust_remote_code)
train = cap_rows(pd.read_parquet(inp.train), t["max_train_samples"], seed)
validation = cap_rows(pd.read_parquet(inp.validation), t["max_eval_samples"], seed)
cfg = TrainingConfig.from_config(t, seed)
log.info("training on %d rows, validating on %d, device %s", len(train), len(validation), device)
result = train_classifier(model, tokenizer, train, validation, cfg, device)

run = {"dataset": wc.dataset, "slm": wc.slm, "llm": wc.get("llm"), "method": method, "seed": seed,
       "llm_layer": layer}
write_safetensors(snakemake.output.checkpoint, result.best_state,
                  metadata={"method": method, "best_epoch": str(result.best_epoch)})
write_json(snakemake.output.spec, {"model": spec.to_dict(), "run": run, **params})
write_json(snakemake.output.history, {"best_epoch": result.best_epoch, "train_seconds": result.train_seconds,
                                      "epochs": result.history, "device": str(device)})
