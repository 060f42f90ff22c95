"""A selector that reads CLS vectors through each layer (plugin_probe: PiFi's plug-in and head trained on the
frozen SLM's CLS vectors through each frozen layer): its score per layer."""

import time

from pifi.artifacts import read_safetensors, write_json
from pifi.job import job_device, release_device, start_job
from pifi.model_sources import ModelRef
from pifi.selection_record import scores_report
from pifi.selectors import declared

log = start_job(snakemake)
device = job_device(snakemake)
p, wc = snakemake.params, snakemake.wildcards
tensors, _ = read_safetensors(snakemake.input.features, framework="np")
llm = ModelRef.from_manifest(snakemake.input.llm)
selector = declared(wc.selector)
params = {**selector.defaults, **p.selector_params}
if "seed" in params and "seed" not in p.selector_params:
    params["seed"] = p.seed  # folds and initialisations follow selection.seed, as the other selectors' draws
details: dict = {}
started = time.perf_counter()
scores = selector.score(tensors["features"], tensors["labels"], llm.path, device=device,
                        trust_remote_code=llm.trust_remote_code, progress=True, details=details, **params)
log.info("%d layers of %s in %.1f s on %s", len(scores), llm.name, time.perf_counter() - started, device)
release_device(device)
# No stability: each resample would retrain every layer's plug-ins; the fold x init spread is in details.
report = scores_report(wc.selector, scores, converged=None, stability=None, params=params, dataset=wc.dataset,
                       slm_type=wc.slm, llm_type=wc.llm, n_samples=len(tensors["labels"]),
                       details={k: v for k, v in details.items() if k != "params"})
log.info("%s scores %s; best layer %d", wc.selector, [round(s, 4) for s in scores], report["best_layer"])
write_json(snakemake.output.scores, report)
