"""One forward pass of the LLM over the selection samples, keeping every layer's pooled state."""

from pifi.warm import warm_start

warm_start(snakemake, models=[snakemake.input.llm])  # runs the rest in a warm server's fork, if one is up

import time

import pandas as pd

from pifi.artifacts import write_parquet
from pifi.data import check_disjoint, stratified_sample
from pifi.hidden import load_llm_for_states, pooled_layer_states, save_states
from pifi.job import job_device, release_device, start_job
from pifi.model_sources import ModelRef

log = start_job(snakemake)
device = job_device(snakemake)
p = snakemake.params
source = pd.read_parquet(snakemake.input.samples_from)
samples = stratified_sample(source, p.n_samples, p.seed,
                            where=f"dataset {snakemake.wildcards.dataset!r} ({snakemake.input.samples_from})")
check_disjoint(samples, pd.read_parquet(snakemake.input.test, columns=["row_id"]), "selection samples", "test")
llm = ModelRef.from_manifest(snakemake.input.llm)
model, tokenizer = load_llm_for_states(llm.path, device=device, dtype=p.dtype, trust_remote_code=llm.trust_remote_code)
texts = samples["text"] if "text_pair" not in samples else samples["text"] + " " + samples["text_pair"]
started = time.perf_counter()
states = pooled_layer_states(model, tokenizer, texts.tolist(), max_length=p.max_length,
                             batch_size=p.batch_size, device=device)
log.info("pooled states %s in %.1f s on %s (%s)", tuple(states.shape), time.perf_counter() - started, device, p.dtype)
del model
release_device(device)
save_states(snakemake.output.states, states, samples["label"].to_numpy(),
            metadata={"llm": llm.name, "dataset": snakemake.wildcards.dataset})
write_parquet(snakemake.output.samples, samples[["row_id", "label"]])
