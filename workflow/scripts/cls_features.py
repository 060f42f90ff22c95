"""The frozen SLM's CLS vectors of the selection rows: what plugin_probe trains PiFi's plug-in on."""

import torch

from pifi.artifacts import write_safetensors
from pifi.data import selection_samples
from pifi.job import job_device, release_device, start_job
from pifi.model_sources import ModelRef
from pifi.plugin_probe import cls_vectors

log = start_job(snakemake)
device = job_device(snakemake)
p, wc = snakemake.params, snakemake.wildcards
samples = selection_samples(snakemake.input.samples_from, snakemake.input.test, p.n_samples, p.seed,
                            dataset=wc.dataset)  # extract_hidden's draw: the same rows as the states
slm = ModelRef.from_manifest(snakemake.input.slm)
features = cls_vectors(slm.path, samples, max_length=p.max_length, device=device, trust_remote_code=slm.trust_remote_code)
log.info("CLS vectors %s of %s on %s", tuple(features.shape), slm.name, device)
release_device(device)
write_safetensors(snakemake.output.features,
                  {"features": features, "labels": torch.as_tensor(samples["label"].to_numpy().copy())},
                  metadata={"slm": slm.name, "dataset": wc.dataset, "row_ids": ",".join(samples["row_id"])})
