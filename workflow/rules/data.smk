# A checkpoint: the row and label counts in info.json are checked against the selection settings
# (pifi.config.selection_limits_report) before any job that depends on them is scheduled.
checkpoint prepare_data:
    output:
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        test="results/data/{dataset}/test.parquet",
        info="results/data/{dataset}/info.json",
    log:
        "results/logs/data/{dataset}.log",
    params:
        spec=dataset_spec,
        # data.* with the dataset's own settings over it: a per-dataset fix changes this dataset's params alone
        data=lambda wildcards: dataset_settings(config["data"], config["datasets"][wildcards.dataset]),
        code=code_version("prepare_data.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/prepare_data.py"


# Token ids of every split, once per dataset x SLM: no training job tokenizes again.
rule tokenize:
    input:
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        test="results/data/{dataset}/test.parquet",
        slm=slm_manifest,
    output:
        tokens="results/tokens/{dataset}/{slm}/tokens.safetensors",
    log:
        "results/logs/tokens/{dataset}/{slm}.log",
    params:
        max_length=config["training"]["max_length"],
        code=code_version("tokenize_splits.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/tokenize_splits.py"
