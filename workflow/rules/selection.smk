rule fit_pca:
    input:
        states="results/hidden/{dataset}/{llm}/states.safetensors",
    output:
        pca="results/pca/{dataset}/{llm}/pca.safetensors",
    log:
        "results/logs/pca/{dataset}/{llm}.log",
    params:
        n_pcs=config["selection"]["n_pcs"],
        code=code_version("fit_pca.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/fit_pca.py"


rule layer_effects:
    input:
        states="results/hidden/{dataset}/{llm}/states.safetensors",
        samples="results/hidden/{dataset}/{llm}/samples.parquet",
        pca="results/pca/{dataset}/{llm}/pca.safetensors",
    output:
        effects="results/selection/{dataset}/{slm}/{llm}/effects.json",
    log:
        "results/logs/selection/{dataset}/{slm}/{llm}/effects.log",
    params:
        top_pc=config["selection"]["top_pc"],
        lambdas=config["selection"]["lambdas"],
        split=config["selection"]["split"],
        seed=config["selection"]["seed"],
        stability_resamples=config["selection"]["stability_resamples"],
        stability_fraction=config["selection"]["stability_fraction"],
        code=code_version("layer_effects.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/layer_effects.py"


rule select_layer:
    input:
        effects="results/selection/{dataset}/{slm}/{llm}/effects.json",
    output:
        selection="results/selection/{dataset}/{slm}/{llm}/selection.json",
    log:
        "results/logs/selection/{dataset}/{slm}/{llm}/selection.log",
    params:
        code=code_version("select_layer.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/select_layer.py"
