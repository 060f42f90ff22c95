# Selectors turn the cached pooled states into one score per layer (no training): the seed's PC
# patching (fit_pca + layer_effects, in the seed's file format) and the others (layer_scores).
rule fit_pca:
    input:
        states=verified("results/hidden/{dataset}/{llm}/states.safetensors"),
    output:
        pca="results/pca/{dataset}/{llm}/pca.safetensors",
    log:
        "results/logs/pca/{dataset}/{llm}.log",
    params:
        n_pcs=SELECTION["n_pcs"],
        code=code_version("fit_pca.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/fit_pca.py"


rule layer_effects:
    input:
        states=verified("results/hidden/{dataset}/{llm}/states.safetensors"),
        samples="results/hidden/{dataset}/{llm}/samples.parquet",
        pca=verified("results/pca/{dataset}/{llm}/pca.safetensors"),
    output:
        effects="results/selection/{dataset}/{slm}/{llm}/effects.json",
    log:
        "results/logs/selection/{dataset}/{slm}/{llm}/effects.log",
    params:
        top_pc=SELECTION["top_pc"],
        lambdas=SELECTION["lambdas"],
        split=SELECTION["split"],
        seed=SELECTION["seed"],
        stability_resamples=SELECTION["stability_resamples"],
        stability_fraction=SELECTION["stability_fraction"],
        code=code_version("layer_effects.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/layer_effects.py"


rule layer_scores:
    input:
        states=verified("results/hidden/{dataset}/{llm}/states.safetensors"),
    output:
        scores="results/selection/{dataset}/{llm}/scores/{selector}.json",
    log:
        "results/logs/selection/{dataset}/{llm}/{selector}.log",
    wildcard_constraints:
        selector="|".join(re.escape(s) for s in SELECTORS if s != PATCHING) or "^$",
    params:
        selector_params=selector_params,
        seed=SELECTION["seed"],
        stability_resamples=SELECTION["stability_resamples"],
        stability_fraction=SELECTION["stability_fraction"],
        code=code_version("layer_scores.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/layer_scores.py"


# A checkpoint: which layers get trained depends on what the selectors chose.
checkpoint select_layer:
    input:
        unpack(selection_scores),
    output:
        selection="results/selection/{dataset}/{slm}/{llm}/selection.json",
    log:
        "results/logs/selection/{dataset}/{slm}/{llm}/selection.log",
    params:
        selector=SELECTION["selector"],
        code=code_version("select_layer.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/select_layer.py"
