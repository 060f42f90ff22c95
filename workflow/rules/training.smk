# Two rules, one script: `base` has no LLM in its path, PiFi runs do.
TRAINING_PARAMS = dict(
    training=config["training"],
    device=config["device"],
    code=code_version("train.py"),
)


rule train_base:
    input:
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        info="results/data/{dataset}/info.json",
        slm=slm_manifest,
    output:
        checkpoint="results/runs/{dataset}/{slm}/base/seed{seed}/model.safetensors",
        spec="results/runs/{dataset}/{slm}/base/seed{seed}/model.json",
        history="results/runs/{dataset}/{slm}/base/seed{seed}/history.json",
    log:
        "results/logs/runs/{dataset}/{slm}/base/seed{seed}/train.log",
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
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        info="results/data/{dataset}/info.json",
        slm=slm_manifest,
        llm=llm_manifest,
        selection=pifi_layer_input,
    output:
        checkpoint="results/runs/{dataset}/{slm}/{method}/{llm}/seed{seed}/model.safetensors",
        spec="results/runs/{dataset}/{slm}/{method}/{llm}/seed{seed}/model.json",
        history="results/runs/{dataset}/{slm}/{method}/{llm}/seed{seed}/history.json",
    log:
        "results/logs/runs/{dataset}/{slm}/{method}/{llm}/seed{seed}/train.log",
    params:
        **TRAINING_PARAMS,
    resources:
        gpu=1,
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/train.py"
