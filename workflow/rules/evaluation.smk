rule evaluate:
    input:
        checkpoint="results/runs/{run}/model.safetensors",
        spec="results/runs/{run}/model.json",
        history="results/runs/{run}/history.json",
        test=evaluation_test_split,
    output:
        metrics="results/runs/{run}/metrics.json",
        predictions="results/runs/{run}/predictions.parquet",
    log:
        "results/logs/runs/{run}/evaluate.log",
    params:
        max_eval_samples=config["training"]["max_eval_samples"],
        eval_batch_size=config["training"]["eval_batch_size"],
        device=config["device"],
        code=code_version("evaluate.py", "evaluation", "model", "plugged_layer", "training", "data", "gpu"),
    resources:
        gpu=1,
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/evaluate.py"
