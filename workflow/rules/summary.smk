# One summary per (dataset, SLM, LLM) group, then a cheap merge: a group added to a finished project is
# missing, so Snakemake plans its chain like anything missing, and the groups already done stay done.
rule summarize_group:
    input:
        **{f"{kind}_runs": group_runs_of(kind) for kind in RUN_KINDS},
        selection=group_selection,
        scores=group_scores,
        race=group_race,
    output:
        **{name: f"results/summary/groups/{{dataset}}/{{slm}}/{{llm}}/{name}.parquet" for name in GROUP_TABLES},
        # the runs, selection and scores the group's tables were computed from
        runs="results/summary/groups/{dataset}/{slm}/{llm}/runs.json",
    log:
        "results/logs/summary/{dataset}/{slm}/{llm}.log",
    params:
        methods=RUN["methods"],
        sweep=config["sweep"],
        bootstrap=config["statistics"],
        code=code_version("summarize_group.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/summarize_group.py"


rule summarize:
    input:
        groups=group_summaries,
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
        run=RUN,  # described on the report's first page
        selection=SELECTION,
        bootstrap=config["statistics"],
        code=code_version("summarize.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/summarize.py"


# A group's figures read its own tables: a change to one dataset re-draws that dataset's figures alone.
rule plot:
    input:
        layers="results/summary/groups/{dataset}/{slm}/{llm}/layers.parquet",
        scores="results/summary/groups/{dataset}/{slm}/{llm}/selector_scores.parquet",
        summary="results/summary/groups/{dataset}/{slm}/{llm}/summary.parquet",
        comparisons="results/summary/groups/{dataset}/{slm}/{llm}/comparisons.parquet",
        selectors="results/summary/groups/{dataset}/{slm}/{llm}/selectors.parquet",
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
