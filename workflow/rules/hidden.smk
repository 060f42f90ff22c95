rule extract_hidden:
    input:
        unpack(extraction_inputs),
        llm=checked_llm_manifest,  # its own function: both checkpoints are waited for at once
    output:
        states="results/hidden/{dataset}/{llm}/states.safetensors",
        samples="results/hidden/{dataset}/{llm}/samples.parquet",
    threads: cpu_threads("large")
    log:
        "results/logs/hidden/{dataset}/{llm}.log",
    benchmark:
        "results/benchmarks/hidden/{dataset}/{llm}.tsv"
    params:
        n_samples=SELECTION["n_samples"],
        max_length=SELECTION["max_length"],
        batch_size=SELECTION["batch_size"],
        dtype=SELECTION["dtype"],
        seed=SELECTION["seed"],
        device=config["device"],
        code=code_version("extract_hidden.py"),
    resources:
        gpu=1,
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/extract_hidden.py"
