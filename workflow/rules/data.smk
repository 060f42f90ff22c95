rule prepare_data:
    output:
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        test="results/data/{dataset}/test.parquet",
        info="results/data/{dataset}/info.json",
    log:
        "results/logs/data/{dataset}.log",
    params:
        spec=dataset_spec,
        validation_fraction=config["data"]["validation_fraction"],
        seed=config["data"]["seed"],
        code=code_version("prepare_data.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/prepare_data.py"
