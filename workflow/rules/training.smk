# Two rules, one script. PiFi runs are keyed by layer, so a layer asked for by pifi_last, pifi_ilm,
# a compared selector and the sweep is trained once and shared. Each run also writes its test and
# validation predictions at the best epoch (no second model load for evaluation; validation is what
# the layers tied with the oracle are judged on) and its timings apart, so that identical runs give
# identical files everywhere else.
TRAINING_PARAMS = dict(
    # training.*, with the dataset's own max_train_samples / max_eval_samples over it (pifi.config)
    training=lambda wildcards: dataset_training(config["training"], config["datasets"][wildcards.dataset]),
    device=config["device"],
    code=code_version("train.py"),
)


rule train_base:
    input:
        unpack(training_inputs),
    output:
        checkpoint="results/runs/{dataset}/{slm}/base/seed{seed}/model.safetensors",
        spec="results/runs/{dataset}/{slm}/base/seed{seed}/model.json",
        history="results/runs/{dataset}/{slm}/base/seed{seed}/history.json",
        predictions="results/runs/{dataset}/{slm}/base/seed{seed}/predictions.parquet",
        validation_predictions="results/runs/{dataset}/{slm}/base/seed{seed}/validation_predictions.parquet",
        timings="results/runs/{dataset}/{slm}/base/seed{seed}/timings.json",
    threads: cpu_threads("many")
    log:
        "results/logs/runs/{dataset}/{slm}/base/seed{seed}/train.log",
    benchmark:
        "results/benchmarks/runs/{dataset}/{slm}/base/seed{seed}/train.tsv"
    params:
        **TRAINING_PARAMS,
    resources:
        gpu=1,
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/train.py"


rule train_pifi:
    input:
        unpack(training_inputs),
        llm=checked_llm_manifest,
    output:
        checkpoint="results/runs/{dataset}/{slm}/pifi/{llm}/layer{layer}/seed{seed}/model.safetensors",
        spec="results/runs/{dataset}/{slm}/pifi/{llm}/layer{layer}/seed{seed}/model.json",
        history="results/runs/{dataset}/{slm}/pifi/{llm}/layer{layer}/seed{seed}/history.json",
        predictions="results/runs/{dataset}/{slm}/pifi/{llm}/layer{layer}/seed{seed}/predictions.parquet",
        validation_predictions="results/runs/{dataset}/{slm}/pifi/{llm}/layer{layer}/seed{seed}/validation_predictions.parquet",
        timings="results/runs/{dataset}/{slm}/pifi/{llm}/layer{layer}/seed{seed}/timings.json",
    threads: cpu_threads("many")
    log:
        "results/logs/runs/{dataset}/{slm}/pifi/{llm}/layer{layer}/seed{seed}/train.log",
    benchmark:
        "results/benchmarks/runs/{dataset}/{slm}/pifi/{llm}/layer{layer}/seed{seed}/train.tsv"
    params:
        **TRAINING_PARAMS,
    resources:
        gpu=1,
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/train.py"
