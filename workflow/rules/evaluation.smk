# Metrics from the saved predictions: CPU work, no model load.
rule evaluate:
    input:
        predictions="results/runs/{run}/predictions.parquet",
        spec="results/runs/{run}/model.json",
        history="results/runs/{run}/history.json",
    output:
        metrics="results/runs/{run}/metrics.json",
    log:
        "results/logs/runs/{run}/evaluate.log",
    params:
        code=code_version("evaluate.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/evaluate.py"
