"""End to end: the whole DAG with Snakemake on a tiny config (a small sweep, three selectors, the
statistics, figures and report), then what a re-run would redo and how bad inputs are refused.

The workflow is copied into a temporary directory so that the test can edit library code and
watch which rules go stale; jobs import the installed library, which is the same code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pifi.model import ModelSpec
from pifi.selectors import SELECTORS
from pifi.selectors.pc_patching import load_pcas
from tiny_project import LLM_LAYERS, REPO, leak_test_rows, write_tiny_project

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SEED_KEYS = ["task", "dataset", "slm_type", "llm_type", "n_samples", "n_pcs", "top_pc", "effects",
             "best_llm_layer", "seed"]
METHODS = ["base", "pifi_last", "pifi_ilm", "pifi_race", "pifi_oracle"]
LEAKED_TEST_ROWS = 4  # topics' first test rows are copies of training rows


def snakemake(workflow: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "--snakefile", str(workflow / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)


def scheduled_jobs(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}; {} when nothing is to be done."""
    if "Nothing to be done" in dry_run_output:
        return {}
    table = dry_run_output.split("Job stats:", 1)[1]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    return {rule: int(count) for rule, count in rows if rule != "total"}


def executed(log: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a real run executed, from the job blocks of Snakemake's log."""
    jobs = []
    # A job block starts at its head line; two jobs started in one second share a paragraph.
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:$)", log, flags=re.MULTILINE):
        head = re.search(r"^(?:local)?(?:rule|checkpoint) (\w+):$", block, flags=re.MULTILINE)
        if head:
            wildcards = re.search(r"^    wildcards: (.*)$", block, flags=re.MULTILINE)
            jobs.append((head.group(1), wildcards.group(1) if wildcards else ""))
    return jobs


def files(root: Path, pattern: str) -> list[Path]:
    found = sorted(root.glob(pattern))
    assert found, f"no file matches {pattern} under {root}"
    return found


def copy_workflow(root: Path) -> Path:
    workflow = root / "workflow_copy"
    workflow.mkdir()
    for item in ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "src"):
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, workflow / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, workflow / item)
    return workflow


def fresh_project(root: Path) -> tuple[Path, Path, Path]:
    """A copy of the workflow and a tiny project beside it, nothing run yet."""
    workdir = root / "work"
    return copy_workflow(root), workdir, write_tiny_project(workdir)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    workflow = copy_workflow(root)
    workdir = root / "work"
    config = write_tiny_project(workdir)
    leak_test_rows(workdir / "data" / "topics", LEAKED_TEST_ROWS)  # the default split_overlap (warn) keeps them
    settings = yaml.safe_load(config.read_text())
    settings["run"]["methods"].append("pifi_race")  # beside the sweep: it reads the sweep's runs
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    result = snakemake(workflow, workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return workflow, workdir, config, result.stderr


def test_summary_has_every_method_for_every_dataset(project):
    _, workdir, config, _ = project
    datasets = yaml.safe_load(config.read_text())["run"]["datasets"]
    table = pd.read_csv(workdir / "results/summary/summary.csv")
    assert sorted(zip(table["dataset"], table["method"])) == sorted((d, m) for d in datasets for m in METHODS)
    assert ((table["accuracy_low"] <= table["accuracy_mean"]) & (table["accuracy_mean"] <= table["accuracy_high"])).all()
    assert (table["n_seeds"] == 2).all()
    pifi = table[table["method"] != "base"]
    assert (pifi["total_params"] > pifi["trainable_params"]).all()  # the plugged layer is frozen
    base = table[table["method"] == "base"]
    assert (base["total_params"] == base["trainable_params"]).all()
    assert (table.loc[table["method"] == "pifi_last", "llm_layer"].astype(str) == str(LLM_LAYERS - 1)).all()
    markdown = (workdir / "results/summary/summary.md").read_text()
    for dataset in datasets:
        for method in METHODS:
            assert re.search(rf"\| {dataset} \|[^\n]*\| {method} \|", markdown), (dataset, method)
    assert "no significant difference" in markdown or " better than " in markdown or " worse than " in markdown


def test_pifi_ilm_is_the_run_of_the_selected_layer(project):
    _, workdir, _, _ = project
    table = pd.read_csv(workdir / "results/summary/summary.csv")
    for path in files(workdir, "results/selection/*/*/*/selection.json"):
        selection = json.loads(path.read_text())
        row = table[(table["dataset"] == selection["dataset"]) & (table["method"] == "pifi_ilm")]
        assert row["llm_layer"].astype(str).tolist() == [str(selection["layer"])]
        metrics = files(workdir, f"results/runs/{selection['dataset']}/*/pifi/*/layer{selection['layer']}/seed*/metrics.json")
        assert {json.loads(m.read_text())["llm_layer"] for m in metrics} == {selection["layer"]}
        assert set(selection["choices"]) == {"ilm_pc_patching", "fisher", "middle", "plugin_probe"}
        assert selection["choices"]["middle"]["layer"] == LLM_LAYERS // 2


def test_each_layer_and_seed_is_trained_once(project):
    _, workdir, config, log = project
    trained = [w for rule, w in executed(log) if rule == "train_pifi"]
    assert trained and len(trained) == len(set(trained))
    assert "race_first_rung" not in {rule for rule, _ in executed(log)}  # the race read the sweep's histories
    cfg = yaml.safe_load(config.read_text())
    for dataset in cfg["run"]["datasets"]:
        selection = json.loads(files(workdir, f"results/selection/{dataset}/*/*/selection.json")[0].read_text())
        wanted = set(cfg["sweep"]["layers"]) | {LLM_LAYERS - 1} | {c["layer"] for c in selection["choices"].values()}
        runs = files(workdir, f"results/runs/{dataset}/*/pifi/*/layer*/seed*/model.safetensors")
        layers = sorted(int(re.search(r"layer(\d+)", str(p)).group(1)) for p in runs)
        assert layers == sorted(layer for layer in wanted for _ in cfg["run"]["seeds"])


def test_sweep_selectors_and_layers_tables(project):
    _, workdir, _, _ = project
    selectors = pd.read_csv(workdir / "results/summary/selectors.csv")
    assert set(selectors["selector"]) == {"ilm_pc_patching", "fisher", "middle", "plugin_probe"}
    assert selectors["regret"].notna().all() and (selectors["regret_low"] <= selectors["regret_high"]).all()
    assert selectors["kendall_tau"].isna().all()  # 2 swept layers: no rank correlation is defined
    assert selectors["oracle_in_top3"].all()  # ... and the oracle is always among the top 3 of 2
    assert selectors["rank"].between(1, 3).all()
    assert (selectors.groupby("dataset")["drives_pifi_ilm"].sum() == 1).all()
    layers = pd.read_csv(workdir / "results/summary/layers.csv")
    swept = layers[layers["swept"]]
    assert set(swept["layer"]) == {0, 2}
    scores = pd.read_csv(workdir / "results/summary/selector_scores.csv")
    assert (scores.groupby(["dataset", "selector"])["layer"].count() == LLM_LAYERS).all()


def test_effects_file_has_the_seed_format(project):
    _, workdir, config, _ = project
    n_samples = yaml.safe_load(config.read_text())["selection"]["n_samples"]
    for path in files(workdir, "results/selection/*/*/*/effects.json"):
        report = json.loads(path.read_text())
        assert list(report)[: len(SEED_KEYS)] == SEED_KEYS
        assert len(report["effects"]) == LLM_LAYERS
        for effect in report["effects"]:
            assert abs(effect * n_samples - round(effect * n_samples)) < 1e-9
        assert report["best_llm_layer"] == max(range(LLM_LAYERS), key=lambda l: (report["effects"][l], -l))
        assert sum(report["stability"]["win_rate"]) == pytest.approx(1.0)
        assert len(report["probe_converged"]) == LLM_LAYERS
        choice = json.loads(path.with_name("selection.json").read_text())["choices"]["ilm_pc_patching"]
        assert choice["layer"] == report["best_llm_layer"]
        assert choice["win_rate"] == report["stability"]["win_rate"][choice["layer"]]


def test_selection_samples_never_come_from_test(project):
    _, workdir, _, _ = project
    for samples in files(workdir, "results/hidden/*/*/samples.parquet"):
        dataset = samples.parts[-3]
        ids = set(pd.read_parquet(samples)["row_id"])
        test_ids = set(pd.read_parquet(workdir / f"results/data/{dataset}/test.parquet")["row_id"])
        train_ids = set(pd.read_parquet(workdir / f"results/data/{dataset}/train.parquet")["row_id"])
        assert ids and not ids & test_ids and ids <= train_ids


def test_predictions_cover_the_test_rows(project):
    _, workdir, _, _ = project
    runs = files(workdir, "results/runs/**/predictions.parquet")
    assert len(runs) == 2 * 2 * (1 + 3)  # datasets x seeds x (base + 3 PiFi layers)
    for path in runs:
        frame = pd.read_parquet(path)
        probs = frame.filter(like="prob_").to_numpy()
        assert list(frame.columns[:3]) == ["row_id", "label", "prediction"]
        assert frame["row_id"].is_unique and len(frame) == 48
        assert (probs.argmax(axis=1) == frame["prediction"]).all()
        metrics = json.loads(path.with_name("metrics.json").read_text())
        assert metrics["accuracy"] == pytest.approx((frame["label"] == frame["prediction"]).mean())
        assert not path.with_name("resume").exists()  # the epoch checkpoint is removed once the run is done


def test_every_model_beats_the_majority_class(project):
    """The tiny project's tasks are learnable in the run's few steps (tiny_project.keyword_splits), so
    a prediction bug (another epoch's weights, rows out of order) shows here as a fall to chance."""
    _, workdir, _, _ = project
    for path in files(workdir, "results/runs/**/predictions.parquet"):
        frame = pd.read_parquet(path)
        majority = frame["label"].value_counts(normalize=True).max()
        accuracy = (frame["prediction"] == frame["label"]).mean()
        assert frame["prediction"].nunique() > 1, path
        assert accuracy > majority + 0.15, (path, accuracy, majority)


def test_runs_use_the_configured_dropout(project):
    _, workdir, config, _ = project
    dropout = yaml.safe_load(config.read_text())["training"]["dropout"]
    assert dropout != ModelSpec.dropout  # a run that ignored the setting would show
    specs = files(workdir, "results/runs/**/model.json")
    assert {json.loads(path.read_text())["model"]["dropout"] for path in specs} == {dropout}


def test_pca_and_effects_have_the_configured_number_of_pcs(project):
    _, workdir, config, _ = project
    n_pcs = yaml.safe_load(config.read_text())["selection"]["n_pcs"]
    for path in files(workdir, "results/pca/*/*/pca.safetensors"):
        assert [pca.components.shape[0] for pca in load_pcas(path)] == [n_pcs] * LLM_LAYERS, path
    for path in files(workdir, "results/selection/*/*/*/effects.json"):
        report = json.loads(path.read_text())
        assert report["n_pcs"] == n_pcs, path
        assert [len(c) for c in report["pc_label_correlation"]] == [n_pcs] * LLM_LAYERS, path


def test_figures_and_report(project):
    """The report as the README and Makefile make it (a relative --directory, `--report report.html`),
    opening on the verdicts the summary wrote rather than on the DAG."""
    workflow, workdir, config, _ = project
    figures = files(workdir, "results/summary/figures/*.svg")
    assert len(figures) == 5 and all(f.read_text().lstrip().startswith("<?xml") for f in figures)
    assert (workdir / "results/summary/figures/selectors.regret.svg") in figures  # the sweep ran
    project_dir = os.path.relpath(workdir, REPO)  # relative, like `make report PROJECT=demo`
    result = subprocess.run(["make", "--no-print-directory", "report", f"PROJECT={project_dir}",
                             f"CONFIGS={config}"], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"report: {project_dir}/report.html" in result.stdout
    html = (workdir / "report.html").read_text()
    for name in ("summary.csv", "selectors.csv", "sentiment.tiny_bert.tiny_llama.layers.svg",
                 "topics.tiny_bert.tiny_llama.methods.svg", "selectors.regret.svg"):
        assert name in html, name
    page = (workdir / "results/summary/report.rst").read_text()
    assert "Verdict" in page and "['" not in page
    assert "which layer, and is it real?" in html and "Verdict" in html  # the first page is the verdicts


def test_every_documented_report_command_names_its_file_relative_to_the_project():
    """Snakemake resolves --report against --directory: `--directory demo --report demo/report.html`
    looks for demo/demo/ and fails. No documented command may do that."""
    for doc in (REPO / "README.md", REPO / "Makefile"):
        for line in doc.read_text().splitlines():
            report = re.search(r"--report\s+([^\s`]+)", line)
            directory = re.search(r"--directory\s+(\S+)", line)
            if report and directory:
                assert report.group(1) == "report.html", f"{doc.name}: {line.strip()}"


def test_rerun_redoes_only_what_is_stale(project):
    workflow, workdir, config, _ = project
    base = ["--configfile", str(config), "--dry-run"]
    assert scheduled_jobs(snakemake(workflow, workdir, *base).stdout) == {}

    # Touching code without changing it re-runs nothing.
    (workflow / "src/pifi/selectors/pc_patching.py").touch()
    (workflow / "workflow/scripts/train.py").touch()
    assert scheduled_jobs(snakemake(workflow, workdir, *base).stdout) == {}

    # Changing top_pc re-runs the effects and the selection; nothing upstream, no training yet known.
    top1 = workdir / "top_pc.yaml"
    top1.write_text("selection:\n  top_pc: 1\n")
    result = snakemake(workflow, workdir, "--configfile", str(config), str(top1), "--dry-run")
    assert scheduled_jobs(result.stdout) == {"layer_effects": 2, "select_layer": 2, "summarize_group": 2,
                                              "summarize": 1, "plot": 2, "plot_selectors": 1, "all": 1}

    # Editing library code re-runs exactly the rules that use it (and what reads their outputs).
    summary_module = workflow / "src/pifi/summary.py"
    summary_module.write_text(summary_module.read_text() + "\n# an edit\n")
    assert scheduled_jobs(snakemake(workflow, workdir, *base).stdout) == {"summarize_group": 2, "summarize": 1,
                                                                       "plot": 2, "plot_selectors": 1, "all": 1}
    summary_module.write_text(summary_module.read_text().removesuffix("\n# an edit\n"))


def test_a_data_setting_for_one_dataset_re_plans_that_dataset_alone(project):
    workflow, workdir, config, _ = project
    # topics has test rows copied from train: drop_test changes its rows, and its alone
    mine = workdir / "topics_drop_test.yaml"
    mine.write_text("datasets:\n  topics:\n    split_overlap: drop_test\n")
    plan = snakemake(workflow, workdir, "--configfile", str(config), str(mine), "--dry-run").stdout
    assert scheduled_jobs(plan)["prepare_data"] == 1
    assert "dataset=topics" in plan and "dataset=sentiment" not in plan
    # the same setting project-wide re-prepares every dataset
    everyone = workdir / "all_drop_test.yaml"
    everyone.write_text("data:\n  split_overlap: drop_test\n")
    plan = snakemake(workflow, workdir, "--configfile", str(config), str(everyone), "--dry-run").stdout
    assert scheduled_jobs(plan)["prepare_data"] == 2


def test_a_training_cap_for_one_dataset_retrains_that_dataset_alone(project):
    """datasets.<name>.max_train_samples (a large dataset beside small ones) is that dataset's training setting:
    its runs are planned again, not its data, its states or the other dataset."""
    workflow, workdir, config, _ = project
    cap = workdir / "topics_cap.yaml"
    cap.write_text("datasets:\n  topics:\n    max_train_samples: 32\n")
    plan = snakemake(workflow, workdir, "--configfile", str(config), str(cap), "--dry-run").stdout
    jobs = scheduled_jobs(plan)
    assert jobs["train_base"] == 2 and jobs["train_pifi"] >= 2  # the two seeds of topics' base, its PiFi runs
    assert not {"prepare_data", "tokenize", "extract_hidden", "fit_pca", "layer_scores", "select_layer"} & set(jobs)
    assert "dataset=topics" in plan and "dataset=sentiment" not in plan


def test_changing_the_selector_retrains_nothing_already_trained(project):
    workflow, workdir, config, _ = project
    before = {p: p.stat().st_mtime_ns for p in files(workdir, "results/runs/**/model.safetensors")}
    override = workdir / "selector.yaml"
    override.write_text("selection:\n  selector: middle\n")
    result = snakemake(workflow, workdir, "--configfile", str(config), str(override))
    assert result.returncode == 0, result.stderr[-3000:]
    ran = {rule for rule, _ in executed(result.stderr)}
    assert ran <= {"select_layer", "summarize_group", "summarize", "plot", "plot_selectors", "all"}, ran
    assert "select_layer" in ran
    assert {p: p.stat().st_mtime_ns for p in before} == before  # no run was retrained
    table = pd.read_csv(workdir / "results/summary/summary.csv")
    assert (table.loc[table["method"] == "pifi_ilm", "llm_layer"].astype(str) == str(LLM_LAYERS // 2)).all()
    selectors = pd.read_csv(workdir / "results/summary/selectors.csv")
    assert set(selectors.loc[selectors["drives_pifi_ilm"], "selector"]) == {"middle"}


def test_test_rows_copied_from_train_are_shown_on_the_console_in_the_verdict_and_the_report(project):
    _, workdir, _, log = project
    assert ("PiFi data topics: texts shared between splits: "
            f"{LEAKED_TEST_ROWS} test row(s) also in train (96 test rows kept; split_overlap: warn; "
            "datasets.topics.split_overlap: drop_test drops them)") in log
    assert "PiFi data sentiment" not in log  # a clean dataset says nothing
    warning = f"Warning: test rows share their text with train ({LEAKED_TEST_ROWS}) or validation (0) of 96"
    verdicts = (workdir / "results/summary/summary.md").read_text().split("## Methods")[0]
    topics = next(line for line in verdicts.splitlines() if line.startswith("- **topics**"))
    assert warning in topics and "(`split_overlap: warn`; `datasets.topics.split_overlap: drop_test` drops them)" in topics
    assert not any(warning in line for line in verdicts.splitlines() if line.startswith("- **sentiment**"))
    page = (workdir / "results/summary/report.rst").read_text()
    assert warning in page.split("\nMethods\n")[0]
    checks = pd.read_csv(workdir / "results/summary/data_checks.csv").set_index("dataset")
    assert checks.loc["topics", "train_test"] == LEAKED_TEST_ROWS and checks.loc["sentiment", "train_test"] == 0


def test_a_changed_summary_table_stops_plot_naming_it(project):
    """The figures read their group's parquet tables, which carry a checksum: one accuracy changed in a
    group's layers.parquet (mtime kept) stops plot with one line naming the file; editing the CSV changes nothing
    drawn."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    workflow, workdir, config, _ = project
    assert snakemake(workflow, workdir, "--configfile", str(config)).returncode == 0  # up to date after other tests
    path = files(workdir, "results/summary/groups/*/*/*/layers.parquet")[0]
    figures = sorted((workdir / "results/summary/figures").glob("*.svg"))
    original, stat = path.read_bytes(), path.stat()
    drawn = {figure: figure.read_bytes() for figure in figures}
    try:
        table = pq.read_table(path)
        column = table.column("test_mean").to_pylist()
        column[0] = 1.0
        changed = table.set_column(table.schema.get_field_index("test_mean"), "test_mean", pa.array(column))
        pq.write_table(changed.replace_schema_metadata(table.schema.metadata), path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        result = snakemake(workflow, workdir, "--configfile", str(config), "--forcerun", "plot")
        assert result.returncode != 0
        line = next(l for l in result.stderr.splitlines() if l.startswith("PiFi error in plot"))
        assert f"{path.relative_to(workdir)}: its checksum does not match" in line
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        for figure, raw in drawn.items():
            figure.write_bytes(raw)
    assert pd.read_csv(workdir / "results/summary/layers.csv").equals(
        pd.read_parquet(workdir / "results/summary/layers.parquet"))  # the parquet is the CSV's content


def test_a_corrupt_tensor_artifact_stops_the_dag_and_names_the_file(project):
    workflow, workdir, config, _ = project
    states = files(workdir, "results/hidden/sentiment/*/states.safetensors")[0]
    pca = states.parents[2].parent / "pca" / "sentiment" / states.parent.name / "pca.safetensors"
    original, stat = states.read_bytes(), states.stat()
    try:
        data = bytearray(original)
        data[len(data) // 2: len(data) // 2 + len(data) // 4] = bytes(len(data) // 4)  # same size, zeroed
        states.write_bytes(bytes(data))
        os.utime(states, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime kept: Snakemake sees nothing new
        result = snakemake(workflow, workdir, "--configfile", str(config), "--dry-run")
        assert result.returncode != 0
        assert str(states.relative_to(workdir)) in result.stderr + result.stdout
        assert "delete it and rerun" in result.stderr + result.stdout
        assert pca.exists()  # nothing downstream was removed
    finally:
        states.write_bytes(original)
        os.utime(states, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_changed_json_artifact_stops_the_run_naming_it_before_any_table(project):
    """A metrics.json edited after it was written (mtime kept, so Snakemake sees nothing new) stops
    summarize with one line naming it, before any table or figure is written; a changed
    selection.json stops the DAG itself. prepare_data's checks are in info.json."""
    workflow, workdir, config, _ = project
    info = json.loads((workdir / "results/data/topics/info.json").read_text())
    assert set(info["checks"]) == {"split_overlap", "absent_classes"}
    summary = workdir / "results/summary"
    backup = workdir.parent / "summary_backup"
    shutil.copytree(summary, backup)  # copy2: contents and mtimes
    metrics = files(workdir, "results/runs/topics/*/base/seed*/metrics.json")[0]
    selection = files(workdir, "results/selection/topics/*/*/selection.json")[0]
    originals = {path: (path.read_bytes(), path.stat()) for path in (metrics, selection)}
    try:
        metrics.write_text(metrics.read_text().replace('"accuracy": 0.', '"accuracy": 1.', 1))
        os.utime(metrics, ns=(originals[metrics][1].st_atime_ns, originals[metrics][1].st_mtime_ns))
        result = snakemake(workflow, workdir, "--configfile", str(config), "--forcerun", "summarize_group")
        assert result.returncode != 0
        line = next(l for l in result.stderr.splitlines() if l.startswith("PiFi error in summarize_group[dataset=topics"))
        assert f"ArtifactError: {metrics.relative_to(workdir)}: its checksum does not match" in line
        for old in backup.rglob("*"):  # no table or figure was written (Snakemake may have removed some)
            new = summary / old.relative_to(backup)
            assert old.is_dir() or not new.exists() or new.read_bytes() == old.read_bytes(), new
        metrics.write_bytes(originals[metrics][0])
        os.utime(metrics, ns=(originals[metrics][1].st_atime_ns, originals[metrics][1].st_mtime_ns))

        selection.write_text(selection.read_text().replace('"layer": ', '"layer": 1', 1))
        os.utime(selection, ns=(originals[selection][1].st_atime_ns, originals[selection][1].st_mtime_ns))
        result = snakemake(workflow, workdir, "--configfile", str(config), "--dry-run")
        assert result.returncode != 0
        assert f"PiFi error: {selection.relative_to(workdir)}: its checksum does not match" in result.stderr
    finally:
        for path, (raw, stat) in originals.items():
            path.write_bytes(raw)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        shutil.rmtree(summary)
        shutil.copytree(backup, summary)


def test_bad_limits_fail_before_any_training(tmp_path):
    workflow, workdir, config = fresh_project(tmp_path)
    override = workdir / "too_many.yaml"
    override.write_text("run:\n  datasets: [topics]\nselection:\n  n_samples: 100000\n  n_pcs: 4\n")
    result = snakemake(workflow, workdir, "--configfile", str(config), str(override))
    assert result.returncode != 0
    assert "selection.n_samples is 100000 but the train split of 'topics' has" in result.stderr
    assert (workdir / "results/data/topics/info.json").exists()  # it was found out from the data...
    assert not (workdir / "results/runs").exists() and not (workdir / "results/hidden").exists()  # ...before use


def planned_threads(dry_run_output: str) -> dict[str, int]:
    """{rule: threads} of the jobs a dry run lists (Snakemake prints ``threads:`` only above 1)."""
    threads = {}
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:$)", dry_run_output, flags=re.MULTILINE):
        head = re.search(r"^(?:local)?(?:rule|checkpoint) (\w+):$", block, flags=re.MULTILINE)
        if head:
            count = re.search(r"^    threads: (\d+)$", block, flags=re.MULTILINE)
            threads[head.group(1)] = int(count.group(1)) if count else 1
    return threads


def test_cpu_jobs_get_threads_by_the_rule_and_the_device(tmp_path):
    """The rules declare threads (pifi.config.job_threads): a dry run shows them on CPU, 1 each on GPUs."""
    workflow, workdir, config = fresh_project(tmp_path)
    on = {}
    for device in ("cpu", "cuda"):
        override = workdir / f"{device}.yaml"
        override.write_text(f"device: {device}\n")
        plan = snakemake(workflow, workdir, "--configfile", str(config), str(override), "--dry-run", "--cores", "8")
        assert plan.returncode == 0, plan.stderr[-2000:]
        on[device] = planned_threads(plan.stdout)
    cores = min(8, os.cpu_count())  # the machine's cores bound them too
    assert (on["cpu"]["extract_hidden"], on["cpu"]["cls_features"], on["cpu"]["train_base"]) == (
        max(1, cores // 2), max(1, cores // 2), max(1, cores // 4))
    assert {on["cuda"][rule] for rule in ("extract_hidden", "cls_features", "train_base")} == {1}


def test_planned_pifi_runs_do_not_wait_for_the_selection(tmp_path):
    """Once the LLM's depth is known (prepare_model), the last layer's and the sweep's runs can be
    scheduled: they train beside the selection instead of queueing behind it."""
    workflow, workdir, config = fresh_project(tmp_path)
    override = workdir / "one.yaml"
    override.write_text("run:\n  datasets: [topics]\n  seeds: [1]\n")
    until = snakemake(workflow, workdir, "--configfile", str(config), str(override), "--until", "prepare_model")
    assert until.returncode == 0, until.stderr[-3000:]
    assert not (workdir / "results/selection").exists()
    dry = snakemake(workflow, workdir, "--configfile", str(config), str(override), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = scheduled_jobs(dry.stdout)
    assert jobs["select_layer"] == 1
    # sweep [0, 2] and the last layer (2): two runs, already in the DAG; the selected layer comes later.
    assert jobs["train_pifi"] == 2 and jobs["train_base"] == 1


def local_dataset_override(tmp_path: Path, workdir: Path, name: str, train: str, test: str,
                           datasets: list[str]) -> tuple[Path, Path]:
    """A local dataset directory ``name`` (its train.jsonl and test.jsonl) and an override running ``datasets``
    with it; returns (directory, override)."""
    directory = tmp_path / name
    directory.mkdir()
    (directory / "train.jsonl").write_text(train)
    (directory / "test.jsonl").write_text(test)
    override = workdir / f"{name}.yaml"
    override.write_text(f"run:\n  datasets: [{', '.join(datasets)}]\n"
                        f"datasets:\n  {name}: {{source: local, path: {directory}}}\n")
    return directory, override


def test_a_failing_job_says_why_on_the_console(tmp_path):
    workflow, workdir, config = fresh_project(tmp_path)
    broken, override = local_dataset_override(
        tmp_path, workdir, "broken", train='{"text": "fine", "label": 0}\n{"text": "cut off", "lab\n',
        test='{"text": "fine", "label": 0}\n', datasets=["broken"])
    result = snakemake(workflow, workdir, "--configfile", str(config), str(override))
    assert result.returncode != 0
    line = next(l for l in result.stderr.splitlines() if l.startswith("PiFi error in prepare_data[dataset=broken]"))
    assert f"{broken / 'train.jsonl'}:2" in line and "DatasetError" in line and "traceback: results/logs/" in line


def test_unsafe_registry_keys_are_refused_when_the_dag_is_built(tmp_path):
    workflow, workdir, config = fresh_project(tmp_path)
    override = workdir / "evil.yaml"
    override.write_text("models:\n  ../../escape: {source: local, name: x, path: /nonexistent}\n")
    result = snakemake(workflow, workdir, "--configfile", str(config), str(override), "--dry-run")
    assert result.returncode != 0
    assert "config.models.../../escape: not a safe name" in result.stdout + result.stderr
    assert not (tmp_path / "escape").exists() and not (workdir / "results").exists()


def test_pifi_race_halves_the_layers_and_its_continued_run_equals_an_uninterrupted_one(tmp_path):
    """pifi_race alone on the tiny sweep (all 3 layers, 2 seeds, 4 epochs): the first rung trains every layer
    1 epoch on seed 1, each cut keeps ceil(n / 3) = 1, the survivor's seed-1 run resumes after epoch 1, and that
    run is byte for byte the run trained from scratch; the summary has a pifi_race row with its cost."""
    workflow, workdir, config = small_project(tmp_path, datasets=["sentiment"], methods=["pifi_race"])
    settings = yaml.safe_load(config.read_text())
    settings["sweep"] = {"layers": "all"}
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    result = snakemake(workflow, workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    race_dir = workdir / "results/race/sentiment/tiny_bert/tiny_llama"
    rungs = {p.parent.name: json.loads(p.read_text()) for p in race_dir.glob("first_rung/layer*/seed1.json")}
    assert sorted(rungs) == ["layer0", "layer1", "layer2"] and all(len(r["epochs"]) == 1 for r in rungs.values())
    cut1, cut2 = (json.loads((race_dir / f"cut{n}.json").read_text()) for n in (1, 2))
    first_scores = {int(r["layer"]): r["best_validation_accuracy"] for r in rungs.values()}
    assert cut1["survivors"] == [min(first_scores, key=lambda layer: (-first_scores[layer], layer))]
    assert cut2["survivors"] == cut1["survivors"]  # one layer left: the second cut keeps it
    race = json.loads((race_dir / "race.json").read_text())
    layer = cut2["survivors"][0]
    assert race["layer"] == layer and race["cost_runs"] == (3 * 1 + 1 * 3 + 1 * 1 * 4) / 4
    assert race["sweep_runs"] == 3 * 2 and race["cost_fraction"] == pytest.approx(10 / 24)
    assert "PiFi: race sentiment/tiny_bert + tiny_llama: layer" in result.stderr
    run = workdir / f"results/runs/sentiment/tiny_bert/pifi/tiny_llama/layer{layer}/seed1"
    assert json.loads((run / "timings.json").read_text())["resumed_after_epoch"] == 1
    assert not (run / "resume").exists()  # cleared once the run's outputs were written
    assert not list(workdir.glob("results/runs/**/resume"))  # the dropped first rungs' checkpoints too
    trained = sorted(str(p.relative_to(workdir)) for p in workdir.glob("results/runs/**/model.safetensors"))
    assert trained == [f"results/runs/sentiment/tiny_bert/pifi/tiny_llama/layer{layer}/seed{s}/model.safetensors"
                       for s in (1, 2)]
    summary = pd.read_csv(workdir / "results/summary/summary.csv")
    row = summary[summary["method"] == "pifi_race"].iloc[0]
    assert (str(row["llm_layer"]), row["training_runs"], row["n_seeds"]) == (str(layer), 2.5, 2)

    continued = {name: (run / name).read_bytes() for name in ("model.safetensors", "predictions.parquet",
                                                              "validation_predictions.parquet", "history.json")}
    for name in continued:
        (run / name).unlink()
    again = snakemake(workflow, workdir, str(run.relative_to(workdir) / "history.json"), "--configfile", str(config))
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "timings.json").read_text())["resumed_after_epoch"] == 0  # from scratch this time
    assert {name: (run / name).read_bytes() for name in continued} == continued


def test_pifi_race_beside_pifi_last_reads_the_last_layers_run_instead_of_a_first_rung(tmp_path):
    """The last layer is trained whole for pifi_last: the race reads that run's history for it, so no first
    rung shares its run directory's epoch checkpoints; the first rungs the cut drops leave nothing behind."""
    workflow, workdir, config = small_project(tmp_path, datasets=["sentiment"], seeds=[1],
                                              methods=["pifi_last", "pifi_race"])
    settings = yaml.safe_load(config.read_text())
    settings["sweep"] = {"layers": "all"}
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    result = snakemake(workflow, workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    race_dir = workdir / "results/race/sentiment/tiny_bert/tiny_llama"
    assert sorted(p.parent.name for p in race_dir.glob("first_rung/layer*/seed1.json")) == ["layer0", "layer1"]
    assert sorted(json.loads((race_dir / "cut1.json").read_text())["scores"]) == ["0", "1", "2"]
    assert not list(workdir.glob("results/runs/**/resume"))
    survivors = json.loads((race_dir / "cut1.json").read_text())["survivors"]
    runs = workdir / "results/runs/sentiment/tiny_bert/pifi/tiny_llama"
    assert sorted(p.name for p in runs.iterdir()) == sorted({"layer2", *(f"layer{l}" for l in survivors)})


def test_identical_runs_write_identical_artifacts(tmp_path):
    """Two runs of the same small config in two directories: every artifact byte-identical except
    the files that hold timings (timings.json, Snakemake's benchmark files) and the logs. With make demo's
    methods and every selector it computes (configs/demo.yaml over config.yaml), so the demo's numbers
    are the code's, whoever runs it."""
    workflow = copy_workflow(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    config = write_tiny_project(first, seeds=(1,), datasets=("topics",))
    small = yaml.safe_load(config.read_text())
    demo, real = (yaml.safe_load((REPO / name).read_text()) for name in ("configs/demo.yaml", "config.yaml"))
    small["run"]["methods"] = demo["run"]["methods"]
    # neither config lists selectors: the demo computes every declared one, the default
    assert "selectors" not in demo.get("selection", {}) and "selectors" not in real["selection"]
    small["selection"]["selectors"] = list(SELECTORS)
    assert len(small["selection"]["selectors"]) == 11
    config.write_text(yaml.safe_dump(small, sort_keys=False))
    second.mkdir()
    for workdir in (first, second):  # the same config (and model paths) for both
        result = snakemake(workflow, workdir, "--configfile", str(config))
        assert result.returncode == 0, result.stderr[-3000:]

    def artifacts(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "results").rglob("*"))
                if p.is_file() and not {"logs", "benchmarks"} & set(p.parts) and p.name != "timings.json"}

    a, b = artifacts(first), artifacts(second)
    assert a.keys() == b.keys() and len(a) > 20
    assert any(name.endswith(".safetensors") for name in a) and any(name.endswith(".svg") for name in a)
    assert [name for name in a if a[name] != b[name]] == []


def test_plugin_probe_trains_on_the_selection_rows_and_feeds_the_leaderboard(project, tmp_path):
    """plugin_probe's CLS vectors are those of the hidden states' own rows (never test rows), its scores
    cover every layer, and the leaderboard script judges every selector of the finished project."""
    from pifi.artifacts import read_json, read_parquet, read_safetensors

    _, workdir, config, _ = project
    cfg = yaml.safe_load(config.read_text())
    for dataset in cfg["run"]["datasets"]:
        tensors, metadata = read_safetensors(workdir / f"results/features/{dataset}/tiny_bert/cls.safetensors")
        samples = read_parquet(workdir / f"results/hidden/{dataset}/tiny_llama/samples.parquet")
        assert metadata["row_ids"].split(",") == samples["row_id"].tolist()
        assert tensors["features"].shape == (len(samples), 32) and tensors["labels"].tolist() == samples["label"].tolist()
        report = read_json(workdir / f"results/selection/{dataset}/tiny_bert/tiny_llama/scores/plugin_probe.json")
        assert len(report["scores"]) == LLM_LAYERS and all(0 <= s <= 1 for s in report["scores"])
    used = read_json(workdir / "results/summary/runs.json")  # what the leaderboard judges: the summary's runs
    assert sorted(used["metrics"]) == sorted(str(p.relative_to(workdir)) for p in workdir.glob("results/runs/**/metrics.json"))
    assert used["statistics"]["n_resamples"] == cfg["statistics"]["n_resamples"]
    out = tmp_path / "leaderboard.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "selectors_leaderboard.py"), str(workdir),
                             "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    board = read_json(out)
    assert board["datasets"] == sorted(cfg["run"]["datasets"]) and "machine" in board
    summary = pd.read_csv(workdir / "results/summary/selectors.csv")
    layers = pd.read_csv(workdir / "results/summary/layers.csv")
    for dataset in board["datasets"]:
        sweep = board["sweeps"][dataset]
        oracle = sweep["oracle_layer"]
        run = files(workdir, f"results/runs/{dataset}/*/pifi/*/layer0/seed1")[0]
        validation = read_parquet(run / "validation_predictions.parquet")
        rows = cfg["training"]["max_eval_samples"]  # of the 96 of each split
        assert sweep["validation_rows"] == len(validation) == rows and sweep["test_rows"] == rows
        assert sweep["majority_accuracy"] == round(validation["label"].value_counts().max() / rows, 4)
        assert sweep["informative"] == (sweep["best_validation_accuracy"] - sweep["majority_accuracy"] >= 0.05)
        mine = layers[(layers["dataset"] == dataset) & layers["swept"]]
        assert sweep["tied_layers"] == sorted(mine.loc[mine["tied"], "layer"].tolist()) and oracle in sweep["tied_layers"]
        assert {"layer", "tied", "cost_fraction", "regret"} <= set(sweep["race"])
        # 2 layers x 1 epoch, then 1 layer x 3 more epochs, then 1 x 1 more seed x 4 epochs, of 2 x 2 x 4
        assert sweep["race"]["cost_fraction"] == round(9 / 16, 4)
        for name in cfg["selection"]["selectors"]:
            row = board[dataset][name]
            assert {"layer", "tied", "regret", "regret_ci", "rho", "tau", "top3", "seconds"} <= set(row)
            assert row["layer"] in cfg["sweep"]["layers"]
            assert row["tied"] == (row["layer"] in sweep["tied_layers"])
            assert row["regret_ci"][0] <= row["regret"] <= row["regret_ci"][1]
            if row["layer"] == oracle:  # the oracle against itself: no regret, no interval
                assert row["regret"] == 0 and row["regret_ci"] == [0, 0]
            same = summary[(summary["dataset"] == dataset) & (summary["selector"] == name)
                           & (summary["layer"] == row["layer"])]
            if len(same):  # one judge: the summary's regret, in points
                assert row["regret"] == pytest.approx(100 * same["regret"].iloc[0], abs=0.006)
        assert "plugin_probe+loss" in board[dataset]
    # An earlier board's dataset (another session's run of the same recipe) joins the means and the rule.
    earlier = {**board, "datasets": ["elsewhere"], "sweeps": {"elsewhere": {**board["sweeps"][dataset],
                                                                             "informative": True}},
               "elsewhere": board[dataset]}
    from pifi.artifacts import write_json
    write_json(tmp_path / "earlier.json", {k: v for k, v in earlier.items() if k != "pifi_sha256"})
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "selectors_leaderboard.py"), str(workdir),
                             "--out", str(out), "--merge", str(tmp_path / "earlier.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    grown = read_json(out)
    assert grown["datasets"] == sorted([*board["datasets"], "elsewhere"])
    assert grown["merged"] == {"elsewhere": {"file": "earlier.json", "git_commit": board["machine"]["git_commit"],
                                             "date_utc": board["machine"]["date_utc"], "load": "quiet"}}
    assert grown["elsewhere"] == board[dataset] and grown["sweeps"]["elsewhere"]["informative"]
    informative = sum(grown["sweeps"][d]["informative"] for d in grown["datasets"])
    assert grown["rule"]["informative_datasets"] == informative
    assert grown["overall"]["middle"]["datasets"] == informative


def small_project(tmp_path: Path, **run) -> tuple[Path, Path, Path]:
    """A fresh tiny project whose run matrix is changed by ``run`` (e.g. methods=[\"base\"])."""
    workflow, workdir, config = fresh_project(tmp_path)
    settings = yaml.safe_load(config.read_text())
    settings["run"].update(run)
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    return workflow, workdir, config


def test_plugin_probe_finetuned_reads_the_lowest_seeds_base_run_and_trains_it_if_no_method_does(tmp_path):
    """features: finetuned: the CLS vectors come from the fine-tuned encoder of the base run of the lowest
    seed, which the run trains although `base` is not among its methods; the pretrained vectors are not made."""
    from pifi.artifacts import read_json, read_safetensors

    workflow, workdir, config = small_project(tmp_path, methods=["pifi_last", "pifi_ilm"], seeds=[2, 1],
                                              datasets=["topics"])
    settings = yaml.safe_load(config.read_text())
    settings["selection"]["selectors"] = ["ilm_pc_patching", "plugin_probe_finetuned"]
    settings["selection"]["selector_params"] = {"plugin_probe_finetuned": {"epochs": 2, "inits": 1, "folds": 3}}
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    plan = snakemake(workflow, workdir, "--configfile", str(config), "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    result = snakemake(workflow, workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    ran = executed(result.stderr)
    assert [w for rule, w in ran if rule == "train_base"] == ["dataset=topics, slm=tiny_bert, seed=1"]
    assert [rule for rule, _ in ran].count("cls_features_finetuned") == 1
    assert "cls_features" not in [rule for rule, _ in ran]
    tensors, metadata = read_safetensors(workdir / "results/features/topics/tiny_bert/cls.finetuned.safetensors")
    assert "results/runs/topics/tiny_bert/base/seed1/model.safetensors" in metadata["encoder"]
    samples = read_json(workdir / "results/selection/topics/tiny_bert/tiny_llama/scores/plugin_probe_finetuned.json")
    assert len(samples["scores"]) == LLM_LAYERS and samples["params"]["features"] == "finetuned"
    selectors = pd.read_csv(workdir / "results/summary/selectors.csv")
    assert "plugin_probe_finetuned" in set(selectors["selector"])


def _methods_of(path: Path) -> list[str]:
    return yaml.safe_load(path.read_text())["run"]["methods"]


# The method sets users run: the demo's, the real experiment's (config.yaml) and the plain two.
GROWN_METHOD_SETS = {"demo": _methods_of(REPO / "configs" / "demo.yaml"), "default": _methods_of(REPO / "config.yaml"),
                     "base+last": ["base", "pifi_last"]}


@pytest.mark.parametrize("methods", GROWN_METHOD_SETS.values(), ids=GROWN_METHOD_SETS.keys())
def test_a_finished_project_grows_by_a_dataset_and_by_a_seed(methods, tmp_path):
    """A finished project, then an override that adds a dataset, then one that adds a seed: each plans the
    new chain as anything missing is planned (one new summary group, the cheap merge, nothing finished
    again), and runs it; a bad added dataset gets its own error from its own data, never the figures'."""
    workflow, workdir, config = small_project(tmp_path, datasets=["sentiment"], seeds=[1], methods=methods)
    first = snakemake(workflow, workdir, "--configfile", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stderr.count("grows as checkpoints") == 1  # said once, up front
    assert "PiFi: trained sentiment/tiny_bert base seed 1: validation accuracy" in first.stderr
    finished = {path: path.stat().st_mtime_ns for path in workdir.glob("results/runs/**/*.safetensors")}
    assert finished

    _, bad = local_dataset_override(  # a valid directory of a badly copied dataset
        tmp_path, workdir, "mine", train='{"text": "good film", "label": 1}\n{"text": "dull", "label": "positive"}\n',
        test='{"text": "fine", "label": 0}\n', datasets=["sentiment", "mine"])
    failed = snakemake(workflow, workdir, "--configfile", str(config), str(bad))
    assert failed.returncode != 0
    line = next(l for l in failed.stderr.splitlines() if l.startswith("PiFi error in prepare_data[dataset=mine]"))
    assert "labels must be integers" in line and "'positive'" in line
    assert "NaN" not in failed.stderr and "PiFi error in plot" not in failed.stderr

    grow = workdir / "grow.yaml"
    grow.write_text("run:\n  datasets: [sentiment, topics]\n")
    dry = snakemake(workflow, workdir, "--configfile", str(config), str(grow), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = scheduled_jobs(dry.stdout)
    assert (jobs.get("prepare_data"), jobs.get("summarize_group"), jobs.get("summarize")) == (1, 1, 1), jobs
    assert jobs.get("train_base") == 1, jobs  # topics' base run; its PiFi runs follow its checkpoints
    grown = snakemake(workflow, workdir, "--configfile", str(config), str(grow))
    assert grown.returncode == 0, grown.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # nothing finished was redone
    assert "summarize_group" in {rule for rule, _ in executed(grown.stderr)}
    summary = pd.read_csv(workdir / "results/summary/summary.csv")
    assert sorted(set(summary["dataset"])) == ["sentiment", "topics"]
    assert set(summary["method"]) == set(methods) - {"pifi_sweep"} | ({"pifi_oracle"} if "pifi_sweep" in methods else set())
    figures = {path.name for path in (workdir / "results/summary/figures").glob("topics.*.svg")}
    assert figures == {"topics.tiny_bert.tiny_llama.layers.svg", "topics.tiny_bert.tiny_llama.methods.svg"}

    seeded = workdir / "seeded.yaml"
    seeded.write_text("run:\n  datasets: [sentiment, topics]\n  seeds: [1, 2]\n")
    dry = snakemake(workflow, workdir, "--configfile", str(config), str(seeded), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = scheduled_jobs(dry.stdout)
    assert (jobs.get("prepare_data"), jobs.get("summarize_group"), jobs.get("summarize")) == (None, 2, 1), jobs
    assert jobs.get("train_base") == 2, jobs  # seed 2 of each dataset
    finished = {path: path.stat().st_mtime_ns for path in workdir.glob("results/runs/**/*.safetensors")}
    again = snakemake(workflow, workdir, "--configfile", str(config), str(seeded))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in finished} == finished
    summary = pd.read_csv(workdir / "results/summary/summary.csv")
    assert set(summary["n_seeds"]) == {2} and sorted(set(summary["dataset"])) == ["sentiment", "topics"]


def test_a_signal_to_snakemake_stops_training_and_the_same_command_resumes_it(tmp_path):
    """SIGTERM to Snakemake's PID (a process manager's stop): the training job stops promptly, its
    finished epochs stay, the console says how to resume, and the same command resumes the run."""
    workflow, workdir, config = small_project(tmp_path, datasets=["topics"], seeds=[1], methods=["base"])
    settings = yaml.safe_load(config.read_text())
    settings["training"].update(epochs=60, max_train_samples=None)  # long enough to be caught mid-run
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    command = [str(SNAKEMAKE), "--snakefile", str(workflow / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", "--configfile", str(config)]
    run_dir = workdir / "results/runs/topics/tiny_bert/base/seed1"
    checkpoint = run_dir / "resume/epoch.safetensors"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not checkpoint.exists():
            assert process.poll() is None and time.monotonic() < deadline, "no epoch checkpoint was written"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert time.monotonic() - signalled < 30  # not the rest of the 60 epochs
    assert process.returncode != 0
    # our line is the last thing printed, and no error block of the interrupted job surrounds it
    assert stderr.strip().splitlines()[-1].startswith("PiFi: interrupted; run the same command again to resume")
    assert not any(noise in stderr for noise in ("PiFi error", "Error in rule", "RuleException", "WorkflowError"))
    snakemake_logs = sorted((workdir / ".snakemake/log").glob("*.snakemake.log"))
    assert "Error in rule train_base" in snakemake_logs[-1].read_text()  # Snakemake's own log keeps everything
    assert checkpoint.exists() and not (run_dir / "model.safetensors").exists()
    log = workdir / "results/logs/runs/topics/tiny_bert/base/seed1/train.log"
    assert "interrupted (signal SIGTERM)" in log.read_text()

    again = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"resumed after epoch \d+ of 60", log.read_text())
    # the console says so, under the run's name
    assert re.search(r"PiFi: topics/tiny_bert base seed 1: resumed after epoch \d+ of 60", again.stderr)
    assert not checkpoint.exists() and (run_dir / "model.safetensors").exists()
