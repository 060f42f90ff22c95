# Helpers shared by the rules: config validation, the run matrix, and code versions.
import hashlib
import os
import re
from pathlib import Path

from snakemake.utils import validate

from pifi.config import check_config_keys, check_run_names
from pifi.provenance import code_fingerprint

REPO = Path(workflow.basedir)
LIBRARY = REPO / "src" / "pifi"
SCRIPTS = REPO / "workflow" / "scripts"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
# envs/pifi.yaml installs the library from here (--sdm conda).
os.environ.setdefault("PIFI_REPO", str(REPO))

check_config_keys(config, SCHEMA)  # unknown keys first, named plainly
validate(config, schema=str(SCHEMA))  # types, ranges, defaults
check_run_names(config)

RUN = config["run"]
PIFI_METHODS = ("pifi_last", "pifi_ilm")


wildcard_constraints:
    dataset="|".join(map(re.escape, config["datasets"])),
    model="|".join(map(re.escape, config["models"])),
    slm="|".join(map(re.escape, config["models"])),
    llm="|".join(map(re.escape, config["models"])),
    method="|".join(PIFI_METHODS),
    seed=r"\d+",
    run=r"[^/]+/[^/]+/.+/seed\d+",


def code_version(script):
    """Content hash of a rule's script and every library module it imports (pifi.provenance).

    Passed as a param, so editing the code re-runs the rule (params trigger) while touching a
    file without changing it re-runs nothing (profiles/default drops the mtime-based code trigger).
    """
    return code_fingerprint(SCRIPTS / script, LIBRARY)


def dataset_spec(wildcards):
    return config["datasets"][wildcards.dataset]


def model_spec(wildcards):
    return config["models"][wildcards.model]


def model_manifest(name):
    return f"results/models/{name}/model.json"


def llm_manifest(wildcards):
    return model_manifest(wildcards.llm)


def slm_manifest(wildcards):
    return model_manifest(wildcards.slm)


def run_dirs():
    """results/runs/... for every dataset x SLM x method x LLM x seed in `run`."""
    dirs = []
    for dataset in RUN["datasets"]:
        for slm in RUN["slms"]:
            for seed in RUN["seeds"]:
                if "base" in RUN["methods"]:
                    dirs.append(f"results/runs/{dataset}/{slm}/base/seed{seed}")
                for method in PIFI_METHODS:
                    if method in RUN["methods"]:
                        dirs += [f"results/runs/{dataset}/{slm}/{method}/{llm}/seed{seed}" for llm in RUN["llms"]]
    return dirs


def metrics_files():
    return [f"{d}/metrics.json" for d in run_dirs()]


def selection_files():
    if "pifi_ilm" not in RUN["methods"]:
        return []
    return [
        f"results/selection/{dataset}/{slm}/{llm}/selection.json"
        for dataset in RUN["datasets"]
        for slm in RUN["slms"]
        for llm in RUN["llms"]
    ]


def evaluation_test_split(wildcards):
    dataset = wildcards.run.split("/", 1)[0]
    return f"results/data/{dataset}/test.parquet"


def summary_outputs():
    return ["results/summary/summary.csv", "results/summary/summary.md"]


def pifi_layer_input(wildcards):
    """pifi_ilm needs the selection; pifi_last only the LLM (its depth gives the last layer)."""
    if wildcards.method == "pifi_ilm":
        return f"results/selection/{wildcards.dataset}/{wildcards.slm}/{wildcards.llm}/selection.json"
    return []
