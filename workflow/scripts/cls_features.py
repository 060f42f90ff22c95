"""The SLM's CLS vectors of the selection rows: what plugin_probe trains PiFi's plug-in on. The pretrained
SLM's, or (with the inputs of a base run: rule cls_features_finetuned) that run's fine-tuned encoder's."""

import torch

from pifi.artifacts import read_json, write_safetensors
from pifi.data import selection_samples
from pifi.job import job_device, release_device, start_job
from pifi.model import ModelSpec
from pifi.trained_runs import load_trained_classifier
from pifi.model_sources import ModelRef
from pifi.plugin_probe import cls_vectors

log = start_job(snakemake)
device = job_device(snakemake)
p, wc, inp = snakemake.params, snakemake.wildcards, snakemake.input
samples = selection_samples(inp.samples_from, inp.test, p.n_samples, p.seed,
                            dataset=wc.dataset)  # extract_hidden's draw: the same rows as the states
slm = ModelRef.from_manifest(inp.slm)
encoder, source = None, f"pretrained {slm.name}"
if "checkpoint" in inp.keys():
    encoder = load_trained_classifier(ModelSpec(**read_json(inp.spec)["model"]), inp.checkpoint).encoder
    source = f"fine-tuned {slm.name} of {inp.checkpoint}"
features = cls_vectors(slm.path, samples, max_length=p.max_length, device=device,
                       trust_remote_code=slm.trust_remote_code, encoder=encoder)
log.info("CLS vectors %s of the %s on %s", tuple(features.shape), source, device)
release_device(device)
write_safetensors(snakemake.output.features,
                  {"features": features, "labels": torch.as_tensor(samples["label"].to_numpy().copy())},
                  metadata={"slm": slm.name, "dataset": wc.dataset, "row_ids": ",".join(samples["row_id"]),
                            "encoder": source})
