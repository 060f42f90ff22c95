"""Per-layer PCA of the pooled states (basis, mean and scores)."""

from pifi.hidden import load_states
from pifi.job import start_job
from pifi.selectors.pc_patching import fit_pcas, save_pcas

log = start_job(snakemake)
states, _ = load_states(snakemake.input.states)
pcas = fit_pcas(states, snakemake.params.n_pcs)
log.info("fitted %d layers, %d PCs each", len(pcas), pcas[0].components.shape[0])
save_pcas(snakemake.output.pca, pcas)
