rule summarize:
    input:
        metrics=metrics_files(),
        selections=selection_files(),
    output:
        csv="results/summary/summary.csv",
        markdown="results/summary/summary.md",
    log:
        "results/logs/summary.log",
    params:
        code=code_version("summarize.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/summarize.py"
