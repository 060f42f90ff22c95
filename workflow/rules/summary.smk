rule summarize:
    input:
        base_metrics=base_metrics,
        planned_pifi_metrics=planned_pifi_metrics,
        chosen_pifi_metrics=chosen_pifi_metrics,
        base_predictions=base_predictions,
        planned_pifi_predictions=planned_pifi_predictions,
        chosen_pifi_predictions=chosen_pifi_predictions,
        race_pifi_metrics=race_pifi_metrics,
        race_pifi_predictions=race_pifi_predictions,
        races=race_files,
        selections=selection_files,
        scores=all_scores_files,
        # the data checks (texts shared between splits) reach the verdicts
        infos=expand("results/data/{dataset}/info.json", dataset=RUN["datasets"]),
    output:
        **{name: report(f"results/summary/{name}.csv", category="Tables",
                        caption="../report/tables.rst") for name in SUMMARY_TABLES},
        # the same tables with a checksum: what the figures read
        **{f"{name}_parquet": f"results/summary/{name}.parquet" for name in SUMMARY_TABLES},
        markdown="results/summary/summary.md",
        # The HTML report's first page (Snakefile `report:`): verdicts and a description of what ran.
        page="results/summary/report.rst",
        # the runs, selections and statistics the tables were computed from
        runs="results/summary/runs.json",
    log:
        "results/logs/summary.log",
    params:
        # The whole run matrix, so that adding a dataset, seed or model to a finished project
        # re-plans the summary (and, through its inputs, the new chain) instead of only the plots.
        run=RUN,
        selection=SELECTION,
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
        layers="results/summary/layers.parquet",
        scores="results/summary/selector_scores.parquet",
        summary="results/summary/summary.parquet",
        comparisons="results/summary/comparisons.parquet",
        selectors="results/summary/selectors.parquet",
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


rule plot_selectors:
    input:
        selectors="results/summary/selectors.parquet",
    output:
        figure=report("results/summary/figures/selectors.regret.svg", category="Figures", subcategory="Selectors",
                      caption="../report/selectors.rst"),
    log:
        "results/logs/figures/selectors.log",
    params:
        code=code_version("plot_selectors.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/plot_selectors.py"
