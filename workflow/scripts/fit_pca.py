"""Per-layer PCA of the pooled states (basis, mean and scores)."""

from pifi.warm import warm_start

warm_start(snakemake)  # the rest runs in a warm server's fork, if one is up (pifi.warm)

from pifi.hidden import load_states
from pifi.job import start_job
from pifi.selection import fit_layer_pca, save_pcas

log = start_job(snakemake)
states, _ = load_states(snakemake.input.states)
pcas = [fit_layer_pca(layer, snakemake.params.n_pcs) for layer in states]
log.info("fitted %d layers, %d PCs each", len(pcas), pcas[0].components.shape[0])
save_pcas(snakemake.output.pca, pcas)
