"""The PC-patching effect of every decoder layer, in the ILM reference experiment's JSON format."""

from pifi.artifacts import write_json
from pifi.hidden import load_states
from pifi.job import start_job
from pifi.selection_record import unconverged_layers
from pifi.selectors import PATCHING, selection_stability
from pifi.selectors.pc_patching import effects_report, layer_effects, load_pcas

log = start_job(snakemake)
p, wc = snakemake.params, snakemake.wildcards
states, labels = load_states(snakemake.input.states)
pcas = load_pcas(snakemake.input.pca)
effects = layer_effects(states, labels, pcas=pcas, top_pc=p.top_pc, lambdas=p.lambdas)  # fit_pca's PCA, fitted once
n_pcs = pcas[0].components.shape[0]
report = effects_report(
    effects, dataset=wc.dataset, slm_type=wc.slm, llm_type=wc.llm, n_samples=len(labels),
    n_pcs=n_pcs, top_pc=p.top_pc, seed=p.seed, lambdas=list(p.lambdas), sample_split=p.split,
)
report["converged"] = report["probe_converged"]
report["stability"] = None
if p.stability_resamples:
    report["stability"] = selection_stability(
        PATCHING, states, labels, n_pcs=n_pcs, top_pc=p.top_pc, lambdas=list(p.lambdas),
        resamples=p.stability_resamples, fraction=p.stability_fraction, seed=p.seed)
    log.info("stability: layer win rates %s", report["stability"]["win_rate"])
if bad := unconverged_layers(report["converged"]):
    log.warning("the probe did not converge on layers %s (effects kept, marked in `probe_converged`)", bad)
log.info("effects %s; best layer %d", report["effects"], report["best_llm_layer"])
write_json(snakemake.output.effects, report)
