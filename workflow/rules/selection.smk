# Selectors turn the cached pooled states into one score per layer (no SLM training): the ILM reference
# experiment's PC patching (fit_pca + layer_effects, in its file format) and the others (layer_scores);
# plugin_probe instead trains PiFi's plug-in on the frozen SLM's CLS vectors through each layer.
rule fit_pca:
    input:
        states=verified("results/hidden/{dataset}/{llm}/states.safetensors"),
    output:
        pca="results/pca/{dataset}/{llm}/pca.safetensors",
    threads: cpu_threads("large")
    log:
        "results/logs/pca/{dataset}/{llm}.log",
    benchmark:
        "results/benchmarks/pca/{dataset}/{llm}.tsv"
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
    threads: cpu_threads("large")
    log:
        "results/logs/selection/{dataset}/{slm}/{llm}/effects.log",
    benchmark:
        "results/benchmarks/selection/{dataset}/{slm}/{llm}/effects.tsv"
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
    threads: cpu_threads("many")
    log:
        "results/logs/selection/{dataset}/{llm}/{selector}.log",
    benchmark:
        "results/benchmarks/selection/{dataset}/{llm}/{selector}.tsv"
    wildcard_constraints:
        selector=selectors_reading(STATES, NOTHING),
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


rule cls_features:
    input:
        unpack(extraction_inputs),
        slm=slm_manifest,
    output:
        features="results/features/{dataset}/{slm}/cls.safetensors",
    threads: cpu_threads("large")
    log:
        "results/logs/features/{dataset}/{slm}.log",
    benchmark:
        "results/benchmarks/features/{dataset}/{slm}.tsv"
    params:
        n_samples=SELECTION["n_samples"],
        seed=SELECTION["seed"],
        max_length=config["training"]["max_length"],  # the CLS vector PiFi sees: the SLM's own input length
        device=config["device"],
        code=code_version("cls_features.py"),
    resources:
        gpu=1,
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/cls_features.py"


# The same CLS vectors through the fine-tuned encoder of a base run (plugin_probe's features: finetuned).
use rule cls_features as cls_features_finetuned with:
    input:
        unpack(extraction_inputs),
        unpack(finetuned_base_run),
        slm=slm_manifest,
    output:
        features=f"results/features/{{dataset}}/{{slm}}/cls{FINETUNED_SUFFIX}.safetensors",
    log:
        f"results/logs/features/{{dataset}}/{{slm}}{FINETUNED_SUFFIX}.log",
    benchmark:
        f"results/benchmarks/features/{{dataset}}/{{slm}}{FINETUNED_SUFFIX}.tsv"


rule plugin_probe:
    input:
        features=plugged_features,
        llm=checked_llm_manifest,
    output:
        scores="results/selection/{dataset}/{slm}/{llm}/scores/{selector}.json",
    threads: cpu_threads("large")
    log:
        "results/logs/selection/{dataset}/{slm}/{llm}/{selector}.log",
    benchmark:
        "results/benchmarks/selection/{dataset}/{slm}/{llm}/{selector}.tsv"
    wildcard_constraints:
        selector=selectors_reading(PLUGGED),
    params:
        selector_params=selector_params,
        seed=SELECTION["seed"],
        device=config["device"],
        code=code_version("plugin_probe.py"),
    resources:
        gpu=1,
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/plugin_probe.py"


# A checkpoint: which layers get trained depends on what the selectors chose.
checkpoint select_layer:
    input:
        unpack(selection_scores),
    output:
        selection="results/selection/{dataset}/{slm}/{llm}/selection.json",
    log:
        "results/logs/selection/{dataset}/{slm}/{llm}/selection.log",
    benchmark:
        "results/benchmarks/selection/{dataset}/{slm}/{llm}/selection.tsv"
    params:
        selector=SELECTION["selector"],
        choice=SELECTION["choice"],
        code=code_version("select_layer.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/select_layer.py"
