# Helpers shared by the rules: config validation, the run matrix, and code versions.
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from pifi.artifacts import ArtifactError, read_json, verify_safetensors
from pifi.config import (ConfigError, check_config_keys, check_run_names, coerce_command_line_strings,
                         PER_DATASET_TRAINING, dataset_training, job_threads, sweep_layer_set)
from pifi.selection_checks import check_data_limits, check_llm_limits, check_selection_limits, fill_selection_defaults
from pifi.data import dataset_settings
from pifi.gpu import count_gpus
from pifi import run_plan
from pifi.provenance import code_fingerprint
# Each selector is declared once (src/pifi/selectors/): what it reads decides its rule and score file.
from pifi.selectors import NOTHING, PATCHING, PLUGGED, STATES, declared
from pifi.selectors.plugin_probe import FINETUNED_SUFFIX, features_suffix

REPO = Path(workflow.basedir)
LIBRARY = REPO / "src" / "pifi"
SCRIPTS = REPO / "workflow" / "scripts"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
# envs/pifi.yaml installs the library from here (--sdm conda).
os.environ.setdefault("PIFI_REPO", str(REPO))

# --config 'selection={"top_pc": 3}' arrives with "3" a string: typed as the schema says first.
config.update(coerce_command_line_strings(config, yaml.safe_load(SCHEMA.read_text())))
check_config_keys(config, SCHEMA)  # unknown keys and unsafe names first, named plainly
validate(config, schema=str(SCHEMA))  # types, ranges, defaults
fill_selection_defaults(config)  # PC patching's and the selector list's, from the selectors' declarations
check_run_names(config)
check_selection_limits(config)  # limits that need no data (e.g. top_pc <= n_pcs)

RUN = config["run"]
SELECTION = config["selection"]
# The selector that drives pifi_ilm is always computed; the others are compared beside it.
SELECTORS = list(dict.fromkeys([SELECTION["selector"], *SELECTION["selectors"]]))
RACE = config["race"]


wildcard_constraints:
    dataset="|".join(map(re.escape, config["datasets"])),
    model="|".join(map(re.escape, config["models"])),
    slm="|".join(map(re.escape, config["models"])),
    llm="|".join(map(re.escape, config["models"])),
    selector="|".join(map(re.escape, SELECTORS)),
    layer=r"\d+",
    seed=r"\d+",
    rung=r"[12]",
    run=r"[^/]+/[^/]+/(base|pifi/[^/]+/layer\d+)/seed\d+",


def code_version(script):
    """Content hash of a rule's script and every library module it imports (pifi.provenance).

    Passed as a param, so editing the code re-runs the rule (params trigger) while touching a
    file without changing it re-runs nothing (profiles/default drops the mtime-based code trigger).
    """
    return code_fingerprint(SCRIPTS / script, LIBRARY)


@contextmanager
def stop_on(*errors):
    """Stop the whole run with one line when an input function finds a bad file or setting.

    SystemExit, not an exception: Snakemake treats an error in the input function of a job whose
    output already exists as "use the existing file as it is", which would hide the problem.
    """
    try:
        yield
    except errors as error:
        # Printed here: when this happens while the DAG is updated after a checkpoint, Snakemake
        # reports only that the checkpoint job failed.
        print(f"PiFi error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def verified(pattern):
    """An input function for a tensor artifact: a corrupt file stops the DAG before any job runs.

    The check (size, header, checksum) happens once per file and invocation; the error names the
    file and says to delete it, so nothing downstream is removed by a job that could not succeed.
    """
    def existing_and_intact(wildcards):
        path = pattern.format(**wildcards)
        if os.path.exists(path) and path not in _VERIFIED:
            with stop_on(ArtifactError):
                verify_safetensors(path)
            _VERIFIED.add(path)
        return path

    return existing_and_intact


_VERIFIED = set()


# CPU threads per job: see pifi.config.job_threads. (On SLURM this process may see no GPU: profiles/slurm
# sets threads per rule.)
COMPUTES_ON_CPU = config["device"] == "cpu" or (config["device"] == "auto" and count_gpus(config["gpus"]) == 0)


def cpu_threads(share):
    try:
        cores = workflow.cores
    except WorkflowError:  # a cluster executor has no --cores (profiles/slurm sets these rules' threads)
        cores = None
    return job_threads(share, cores=min(cores or 1, os.cpu_count() or 1), on_cpu=COMPUTES_ON_CPU)


def dataset_spec(wildcards):
    """How a dataset is read, less its training caps (the training jobs' params: a new cap re-runs them alone)."""
    spec = config["datasets"][wildcards.dataset]
    return {key: value for key, value in spec.items() if key not in PER_DATASET_TRAINING}


def model_spec(wildcards):
    return config["models"][wildcards.model]


def model_manifest(name):
    return f"results/models/{name}/model.json"


def llm_manifest(wildcards):
    return model_manifest(wildcards.llm)


def slm_manifest(wildcards):
    return model_manifest(wildcards.slm)


def llm_facts(llm):
    """An LLM's manifest, once prepare_model (a checkpoint) has described it; the selection settings
    that depend on its size (n_pcs, a selector's n_components) are checked here, before any job needs them."""
    path = checkpoints.prepare_model.get(model=llm).output.manifest
    with stop_on(ArtifactError):  # a changed manifest stops the run with one line naming it
        manifest = read_json(path)
    if llm not in _CHECKED_LLMS:
        with stop_on(ConfigError):
            check_llm_limits(manifest, SELECTION, SELECTORS)
        _CHECKED_LLMS.add(llm)
    return manifest


def llm_depth(llm):
    return llm_facts(llm)["num_layers"]


def checked_llm_manifest(wildcards):
    llm_facts(wildcards.llm)
    return model_manifest(wildcards.llm)


def checked_data(dataset):
    """info.json of a prepared dataset (prepare_data is a checkpoint), checked against the selection
    settings (n_samples <= rows of the split, folds <= smallest class ...): a bad setting stops the
    workflow before any training or extraction job of the dataset is scheduled."""
    info = checkpoints.prepare_data.get(dataset=dataset).output.info
    if dataset not in _CHECKED_DATA:
        with stop_on(ConfigError, ArtifactError):
            check_data_limits(read_json(info), SELECTION, SELECTORS, dataset=dataset)
        _CHECKED_DATA.add(dataset)
    return info


_CHECKED_DATA, _CHECKED_LLMS = set(), set()


def training_inputs(wildcards):
    return {"tokens": verified("results/tokens/{dataset}/{slm}/tokens.safetensors")(wildcards),
            "test": f"results/data/{wildcards.dataset}/test.parquet",
            "validation": f"results/data/{wildcards.dataset}/validation.parquet",
            "info": checked_data(wildcards.dataset),
            "slm": slm_manifest(wildcards)}


def extraction_inputs(wildcards):
    checked_data(wildcards.dataset)
    return {"samples_from": f"results/data/{wildcards.dataset}/{SELECTION['split']}.parquet",
            "test": f"results/data/{wildcards.dataset}/test.parquet"}  # only to prove no sample is a test row


def selection_file(dataset, slm, llm):
    return f"results/selection/{dataset}/{slm}/{llm}/selection.json"


def selected_layers(dataset, slm, llm):
    """{selector: chosen layer} for every computed selector, known once select_layer (a checkpoint) ran."""
    path = checkpoints.select_layer.get(dataset=dataset, slm=slm, llm=llm).output.selection
    with stop_on(ArtifactError):
        selection = read_json(path)
    return {name: choice["layer"] for name, choice in selection["choices"].items()}


def scores_file(dataset, slm, llm, selector):
    """The reference experiment's effects.json for PC patching, one scores file per other selector: per SLM
    too for those that read the SLM's CLS vectors (PLUGGED), per LLM for those that read its states."""
    if selector == PATCHING:
        return f"results/selection/{dataset}/{slm}/{llm}/effects.json"
    if declared(selector).reads == PLUGGED:
        return f"results/selection/{dataset}/{slm}/{llm}/scores/{selector}.json"
    return f"results/selection/{dataset}/{llm}/scores/{selector}.json"


def selectors_reading(*what):
    """The run's selectors that read one of ``what`` (STATES, PLUGGED, NOTHING), PC patching aside (its own
    rules): a rule's wildcard constraint ("^$", matching nothing, when there is none)."""
    return "|".join(re.escape(s) for s in SELECTORS if s != PATCHING and declared(s).reads in what) or "^$"


def selection_scores(wildcards):
    return {name: scores_file(wildcards.dataset, wildcards.slm, wildcards.llm, name) for name in SELECTORS}


def selector_params(wildcards):
    return SELECTION["selector_params"].get(wildcards.selector, {})


def plugged_features(wildcards):
    """A plugged selector's CLS vectors: the pretrained SLM's, or the fine-tuned base run's of the lowest seed
    (settings ``features: finetuned``; rule cls_features_finetuned)."""
    settings = declared(wildcards.selector).with_defaults(selector_params(wildcards))
    suffix = features_suffix(settings)
    return verified(f"results/features/{wildcards.dataset}/{wildcards.slm}/cls{suffix}.safetensors")(wildcards)


def finetuned_base_run(wildcards):
    """The base run whose encoder gives the fine-tuned CLS vectors: the lowest seed's."""
    run = f"results/runs/{wildcards.dataset}/{wildcards.slm}/base/seed{min(RUN['seeds'])}"
    return {"checkpoint": verified(f"{run}/model.safetensors")(wildcards), "spec": f"{run}/model.json"}


def planned_layers(llm):
    """The layers known from the LLM's depth alone (pifi_last, the sweep): their runs are scheduled as
    soon as prepare_model ran, beside the layer selection rather than after it."""
    with stop_on(ConfigError):
        return run_plan.planned_layers(RUN["methods"], config["sweep"], llm_depth(llm))


def chosen_layers(dataset, slm, llm):
    """The layers only the selection names (known once the select_layer checkpoint ran), not planned ones."""
    if "pifi_ilm" not in RUN["methods"]:  # before asking the select_layer checkpoint, which would wait
        return set()
    chosen = run_plan.chosen_layers(RUN["methods"], selected_layers(dataset, slm, llm), SELECTION["selector"])
    return chosen - planned_layers(llm)


def race_candidates(llm):
    """The race's layers: the sweep's layer set (sweep.layers, sweep.stride)."""
    with stop_on(ConfigError):
        return sweep_layer_set(config["sweep"], llm_depth(llm))


def race_survivors(dataset, slm, llm, rung):
    """The layers cut ``rung`` (1 or 2) kept, known once that race_cut checkpoint ran."""
    path = checkpoints.race_cut.get(dataset=dataset, slm=slm, llm=llm, rung=str(rung)).output.cut
    with stop_on(ArtifactError):
        return read_json(path)["survivors"]


def race_cut_inputs(wildcards):
    """Cut 1 reads each candidate's first rung, or the run's own history where the layer is trained whole
    anyway (swept, the last, a selector's): a layer's first rung and its whole run would share the run
    directory's epoch checkpoints. Cut 2 reads the survivors' whole runs on the race seed."""
    d, s, l, seed = wildcards.dataset, wildcards.slm, wildcards.llm, run_plan.race_seed(RUN)
    if wildcards.rung == "1":
        whole = planned_layers(l)
        if set(race_candidates(l)) - whole:  # only then ask the selection (with a sweep it would only wait)
            whole |= chosen_layers(d, s, l)

        def rung_input(layer):
            if layer in whole:
                return f"layer{layer}_seed{seed}", f"{run_plan.pifi_run_dir(d, s, l, layer, seed)}/history.json"
            rung = f"results/race/{d}/{s}/{l}/first_rung/layer{layer}/seed{seed}.json"
            return f"first_rung_layer{layer}_seed{seed}", rung

        return dict(rung_input(layer) for layer in race_candidates(l))
    return {f"layer{layer}_seed{seed}": f"{run_plan.pifi_run_dir(d, s, l, layer, seed)}/history.json"
            for layer in race_survivors(d, s, l, 1)}


def race_result_inputs(wildcards):
    d, s, l = wildcards.dataset, wildcards.slm, wildcards.llm
    return {"cut1": f"results/race/{d}/{s}/{l}/cut1.json",
            **{f"layer{layer}_seed{seed}": f"{run_plan.pifi_run_dir(d, s, l, layer, seed)}/history.json"
               for layer in race_survivors(d, s, l, 2) for seed in RUN["seeds"]}}


def group_run(wildcards):
    """The run matrix narrowed to one (dataset, SLM, LLM) group: what its summary reads."""
    return {**RUN, "datasets": [wildcards.dataset], "slms": [wildcards.slm], "llms": [wildcards.llm]}


def summary_groups():
    """The (dataset, SLM, LLM) groups the summary is made of. Without a PiFi method no LLM is involved and the
    base runs of a (dataset, SLM) form one group (named by the first LLM), not one copy per LLM."""
    llms = RUN["llms"] if set(RUN["methods"]) - {"base"} else RUN["llms"][:1]
    return [(d, s, l) for d in RUN["datasets"] for s in RUN["slms"] for l in llms]


def race_run_dirs(run):
    """The final rung's runs (what the summary's pifi_race row is drawn from), less those planned or chosen."""
    if "pifi_race" not in run["methods"]:
        return []
    others = set(planned_run_dirs(run)) | set(chosen_run_dirs(run))
    final = run_plan.race_run_dirs(run, lambda d, s, l, rung: race_survivors(d, s, l, 2) if rung == 2 else [])
    return [d for d in final if d not in others]


def planned_layers_of(dataset, slm, llm):
    return planned_layers(llm)


def planned_run_dirs(run):
    return run_plan.pifi_run_dirs(run, planned_layers_of)


def chosen_run_dirs(run):
    return run_plan.pifi_run_dirs(run, chosen_layers)


# A group's runs, by kind, with one input function per kind, so that no run waits for a checkpoint it does
# not need: base runs need none, planned PiFi runs the LLM's depth (prepare_model), chosen ones the
# selection, the race's its cuts. Every layer is trained once, whichever methods ask for it.
RUN_KINDS = {"base": lambda run: run_plan.base_run_dirs(run), "planned_pifi": planned_run_dirs,
             "chosen_pifi": chosen_run_dirs, "race_pifi": race_run_dirs}
# test predictions (the tables) and validation predictions (the layers tied with the oracle)
RUN_FILES = ("metrics.json", "predictions.parquet", "validation_predictions.parquet")


def group_runs_of(kind):
    def files(wildcards):
        return [f"{d}/{name}" for d in RUN_KINDS[kind](group_run(wildcards)) for name in RUN_FILES]
    files.__name__ = f"{kind}_runs"
    return files


def group_selection(wildcards):
    if not run_plan.needs_selection(RUN["methods"]):
        return []
    return [selection_file(wildcards.dataset, wildcards.slm, wildcards.llm)]


def group_scores(wildcards):
    if not group_selection(wildcards):
        return []
    return [scores_file(wildcards.dataset, wildcards.slm, wildcards.llm, name) for name in SELECTORS]


def group_race(wildcards):
    if "pifi_race" not in RUN["methods"]:
        return []
    return [f"results/race/{wildcards.dataset}/{wildcards.slm}/{wildcards.llm}/race.json"]


def group_summaries(wildcards):
    """Every group's tables: rule all asks for them through summarize, so a group added to a finished
    project plans its whole chain as anything missing does."""
    return [f"results/summary/groups/{d}/{s}/{l}/{name}" for d, s, l in summary_groups()
            for name in (*(f"{table}.parquet" for table in GROUP_TABLES), "runs.json")]


def run_test_split(wildcards):
    return f"results/data/{wildcards.run.split('/', 1)[0]}/test.parquet"


SUMMARY_TABLES = ("summary", "comparisons", "layers", "selectors", "selector_scores", "data_checks")
GROUP_TABLES = SUMMARY_TABLES[:-1]  # data_checks is per dataset, read from info.json by the merge


def figure_files():
    per_triple = [f"results/summary/figures/{d}.{s}.{l}.{kind}.svg"
                  for d in RUN["datasets"] for s in RUN["slms"] for l in RUN["llms"]
                  for kind in ("layers", "methods")
                  if set(RUN["methods"]) - {"base"}]
    # selectors x datasets: regret needs the sweep's oracle, so without a sweep there is nothing to draw
    across = ["results/summary/figures/selectors.regret.svg"] if "pifi_sweep" in RUN["methods"] else []
    return per_triple + across


def final_outputs():
    return [f"results/summary/{name}.csv" for name in SUMMARY_TABLES] + ["results/summary/summary.md",
                                                                         *figure_files()]
