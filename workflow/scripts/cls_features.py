"""The frozen SLM's CLS vectors of the selection rows: what plugin_probe trains PiFi's plug-in on."""

import torch

from pifi.artifacts import read_parquet, write_safetensors
from pifi.data import check_disjoint, stratified_sample
from pifi.job import job_device, release_device, start_job
from pifi.model_sources import ModelRef
from pifi.plugin_probe import cls_vectors

log = start_job(snakemake)
device = job_device(snakemake)
p, wc = snakemake.params, snakemake.wildcards
# The same draw as extract_hidden's (same function, file, size and seed): the same rows as the states.
samples = stratified_sample(read_parquet(snakemake.input.samples_from), p.n_samples, p.seed,
                            where=f"dataset {wc.dataset!r} ({snakemake.input.samples_from})")
check_disjoint(samples, read_parquet(snakemake.input.test, columns=["row_id"]), "selection samples", "test")
slm = ModelRef.from_manifest(snakemake.input.slm)
features = cls_vectors(slm.path, samples, max_length=p.max_length, device=device, trust_remote_code=slm.trust_remote_code)
log.info("CLS vectors %s of %s on %s", tuple(features.shape), slm.name, device)
release_device(device)
write_safetensors(snakemake.output.features,
                  {"features": features, "labels": torch.as_tensor(samples["label"].to_numpy().copy())},
                  metadata={"slm": slm.name, "dataset": wc.dataset, "row_ids": ",".join(samples["row_id"])})
