rule summarize:
    input:
        base_metrics=base_metrics,
        planned_pifi_metrics=planned_pifi_metrics,
        chosen_pifi_metrics=chosen_pifi_metrics,
        base_predictions=base_predictions,
        planned_pifi_predictions=planned_pifi_predictions,
        chosen_pifi_predictions=chosen_pifi_predictions,
        selections=selection_files,
        scores=all_scores_files,
    output:
        **{name: report(f"results/summary/{name}.csv", category="Tables",
                        caption="../report/tables.rst") for name in SUMMARY_TABLES},
        markdown="results/summary/summary.md",
    log:
        "results/logs/summary.log",
    params:
        methods=RUN["methods"],
        sweep=config["sweep"],
        bootstrap=config["statistics"],
        code=code_version("summarize.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/summarize.py"


rule plot:
    input:
        layers="results/summary/layers.csv",
        scores="results/summary/selector_scores.csv",
        summary="results/summary/summary.csv",
    output:
        layers=report("results/summary/figures/{dataset}.{slm}.{llm}.layers.svg", category="Figures",
                      subcategory="{dataset}", caption="../report/layers.rst"),
        methods=report("results/summary/figures/{dataset}.{slm}.{llm}.methods.svg", category="Figures",
                       subcategory="{dataset}", caption="../report/methods.rst"),
    log:
        "results/logs/figures/{dataset}.{slm}.{llm}.log",
    params:
        code=code_version("plot.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/plot.py"
