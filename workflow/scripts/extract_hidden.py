"""The LLM over the selection samples, one decoder layer at a time, keeping every layer's pooled state."""

import time

from pifi.artifacts import write_parquet
from pifi.data import selection_samples
from pifi.hidden import llm_layer_states, save_states
from pifi.job import job_device, release_device, start_job
from pifi.model_sources import ModelRef

log = start_job(snakemake)
device = job_device(snakemake)
p = snakemake.params
samples = selection_samples(snakemake.input.samples_from, snakemake.input.test, p.n_samples, p.seed,
                            dataset=snakemake.wildcards.dataset)
llm = ModelRef.from_manifest(snakemake.input.llm)
texts = samples["text"] if "text_pair" not in samples else samples["text"] + " " + samples["text_pair"]
started = time.perf_counter()
# Streamed: memory is one layer + the samples' activations, whatever the LLM's depth (pifi.hidden).
states = llm_layer_states(llm.path, texts.tolist(), max_length=p.max_length, batch_size=p.batch_size,
                          dtype=p.dtype, device=device, trust_remote_code=llm.trust_remote_code)
log.info("pooled states %s in %.1f s on %s (%s)", tuple(states.shape), time.perf_counter() - started, device, p.dtype)
release_device(device)
save_states(snakemake.output.states, states, samples["label"].to_numpy(),
            metadata={"llm": llm.name, "dataset": snakemake.wildcards.dataset})
write_parquet(snakemake.output.samples, samples[["row_id", "label"]])
