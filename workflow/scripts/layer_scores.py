"""One selector's score per decoder layer (higher = better), with its stability over subsets."""

from pifi.artifacts import write_json
from pifi.hidden import load_states
from pifi.job import start_job
from pifi.selection_record import scores_report, unconverged_layers
from pifi.selectors import score_layers_detailed, selection_stability, selector_params

log = start_job(snakemake)
p, wc = snakemake.params, snakemake.wildcards
states, labels = load_states(snakemake.input.states)
params = {**selector_params(wc.selector), **p.selector_params}
if "seed" in params and "seed" not in p.selector_params:
    params["seed"] = p.seed  # a selector that draws (folds, PCA, block order) follows selection.seed
result = score_layers_detailed(wc.selector, states, labels, **params)
stability = None
if p.stability_resamples:
    draw = {k: v for k, v in params.items() if k != "seed"}
    stability = selection_stability(wc.selector, states, labels, resamples=p.stability_resamples,
                                    fraction=p.stability_fraction, seed=params.get("seed", p.seed), **draw)
report = scores_report(wc.selector, result.scores, converged=result.converged, stability=stability, params=params,
                       dataset=wc.dataset, llm_type=wc.llm, n_samples=len(labels), details=result.details)
if bad := unconverged_layers(result.converged):
    log.warning("%s: a probe did not converge on layers %s (scores kept, marked in `converged`)", wc.selector, bad)
log.info("%s scores %s; best layer %d", wc.selector, [round(s, 4) for s in result.scores], report["best_layer"])
write_json(snakemake.output.scores, report)
