"""plugin_probe's score per layer: PiFi's plug-in and head trained on frozen CLS vectors through each layer."""

import time

from pifi.artifacts import read_safetensors, write_json
from pifi.choice import scores_report
from pifi.job import job_device, release_device, start_job
from pifi.model_sources import ModelRef
from pifi.selectors import PLUGIN_PROBE, score_plugged_layers, selector_params

log = start_job(snakemake)
device = job_device(snakemake)
p, wc = snakemake.params, snakemake.wildcards
tensors, _ = read_safetensors(snakemake.input.features, framework="np")
llm = ModelRef.from_manifest(snakemake.input.llm)
params = {**selector_params(PLUGIN_PROBE), **p.selector_params}
if "seed" not in p.selector_params:
    params["seed"] = p.seed  # folds and initialisations follow selection.seed, as the other selectors' draws
details: dict = {}
started = time.perf_counter()
scores = score_plugged_layers(tensors["features"], tensors["labels"], llm.path, device=device,
                              trust_remote_code=llm.trust_remote_code, progress=True, details=details, **params)
log.info("%d layers of %s in %.1f s on %s", len(scores), llm.name, time.perf_counter() - started, device)
release_device(device)
# No stability: each resample would retrain every layer's plug-ins; the fold x init spread is in details.
report = scores_report(PLUGIN_PROBE, scores, converged=None, stability=None, params=params, dataset=wc.dataset,
                       slm_type=wc.slm, llm_type=wc.llm, n_samples=len(tensors["labels"]),
                       details={k: v for k, v in details.items() if k != "params"})
log.info("plugin_probe scores %s; best layer %d", [round(s, 4) for s in scores], report["best_layer"])
write_json(snakemake.output.scores, report)
