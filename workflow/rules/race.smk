# pifi_race: successive halving over the sweep's layers (pifi.race), one checkpoint per cut.
#   first rung   every candidate layer, race.first_epochs epochs, the first seed; the epoch checkpoint is kept
#   cut 1        keep the best 1/eta (checkpoint race_cut, rung=1)
#   second rung  the survivors continue to the full recipe on the first seed (their sweep runs, resumed)
#   cut 2        keep the best 1/eta again (rung=2)
#   final rung   the survivors on every seed; race.json names the best by mean validation accuracy
# With pifi_sweep in the methods the first rung reads the sweep's own histories: no run is trained twice.


rule race_first_rung:
    input:
        unpack(training_inputs),
        llm=checked_llm_manifest,
    output:
        rung="results/race/{dataset}/{slm}/{llm}/first_rung/layer{layer}/seed{seed}.json",
    threads: cpu_threads("many")
    log:
        "results/logs/race/{dataset}/{slm}/{llm}/layer{layer}/seed{seed}/first_rung.log",
    benchmark:
        "results/benchmarks/race/{dataset}/{slm}/{llm}/layer{layer}/seed{seed}/first_rung.tsv"
    params:
        **TRAINING_PARAMS,  # the same run as train_pifi's (the resume fingerprint), stopped early
        stop_after_epoch=RACE["first_epochs"],
        run_dir=lambda wc: run_plan.pifi_run_dir(wc.dataset, wc.slm, wc.llm, int(wc.layer), int(wc.seed)),
    resources:
        gpu=1,
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/train.py"


checkpoint race_cut:
    input:
        unpack(race_cut_inputs),
    output:
        cut="results/race/{dataset}/{slm}/{llm}/cut{rung}.json",
    log:
        "results/logs/race/{dataset}/{slm}/{llm}/cut{rung}.log",
    params:
        race=RACE,
        epochs=config["training"]["epochs"],
        code=code_version("race.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/race.py"


rule race_result:
    input:
        unpack(race_result_inputs),
    output:
        race="results/race/{dataset}/{slm}/{llm}/race.json",
    log:
        "results/logs/race/{dataset}/{slm}/{llm}/race.log",
    params:
        race=RACE,
        seeds=RUN["seeds"],
        epochs=config["training"]["epochs"],
        code=code_version("race.py"),
    conda:
        "../../envs/pifi.yaml"
    script:
        "../scripts/race.py"
