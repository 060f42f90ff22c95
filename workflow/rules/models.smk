# A checkpoint: the LLM's depth (its last layer, the sweep's layers) is read from the manifest.
checkpoint prepare_model:
    output:
        manifest="results/models/{model}/model.json",
    log:
        "results/logs/models/{model}.log",
    params:
        spec=model_spec,
        code=code_version("prepare_model.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/prepare_model.py"
