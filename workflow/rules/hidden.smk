rule extract_hidden:
    input:
        samples_from=f"results/data/{{dataset}}/{config['selection']['split']}.parquet",
        test="results/data/{dataset}/test.parquet",  # only to prove no sample is a test row
        llm=llm_manifest,
    output:
        states="results/hidden/{dataset}/{llm}/states.safetensors",
        samples="results/hidden/{dataset}/{llm}/samples.parquet",
    log:
        "results/logs/hidden/{dataset}/{llm}.log",
    params:
        n_samples=config["selection"]["n_samples"],
        max_length=config["selection"]["max_length"],
        batch_size=config["selection"]["batch_size"],
        seed=config["selection"]["seed"],
        device=config["device"],
        code=code_version("extract_hidden.py"),
    resources:
        gpu=1,
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/extract_hidden.py"
