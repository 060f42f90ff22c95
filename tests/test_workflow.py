"""End to end: the whole DAG with Snakemake on a tiny config, then what a re-run would redo.

The workflow is copied into a temporary directory so that the test can edit library code and
watch which rules go stale; jobs import the installed library, which is the same code.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tiny_project import LLM_LAYERS, REPO, write_tiny_project

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SEED_KEYS = ["task", "dataset", "slm_type", "llm_type", "n_samples", "n_pcs", "top_pc", "effects",
             "best_llm_layer", "seed"]
METHODS = ["base", "pifi_last", "pifi_ilm"]


def snakemake(workflow: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "--snakefile", str(workflow / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def scheduled_jobs(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}; {} when nothing is to be done."""
    if "Nothing to be done" in dry_run_output:
        return {}
    table = dry_run_output.split("Job stats:", 1)[1]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    return {rule: int(count) for rule, count in rows if rule != "total"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    workflow = root / "workflow_copy"
    workflow.mkdir()
    for item in ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "src"):
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, workflow / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, workflow / item)
    workdir = root / "work"
    config = write_tiny_project(workdir)
    result = snakemake(workflow, workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return workflow, workdir, config


def test_summary_has_every_method_for_every_dataset(project):
    _, workdir, config = project
    datasets = yaml.safe_load(config.read_text())["run"]["datasets"]
    table = pd.read_csv(workdir / "results/summary/summary.csv")
    assert sorted(zip(table["dataset"], table["method"])) == sorted((d, m) for d in datasets for m in METHODS)
    assert table["accuracy_mean"].between(0, 1).all()
    pifi = table[table["method"] != "base"]
    assert (pifi["total_params"] > pifi["trainable_params"]).all()  # the plugged layer is frozen
    base = table[table["method"] == "base"]
    assert (base["total_params"] == base["trainable_params"]).all()
    assert (table.loc[table["method"] == "pifi_last", "llm_layer"].astype(str) == str(LLM_LAYERS - 1)).all()
    markdown = (workdir / "results/summary/summary.md").read_text()
    for dataset in datasets:
        for method in METHODS:
            assert re.search(rf"\| {dataset} \|[^\n]*\| {method} \|", markdown), (dataset, method)


def test_effects_file_has_the_seed_format(project):
    _, workdir, config = project
    n_samples = yaml.safe_load(config.read_text())["selection"]["n_samples"]
    for path in (workdir / "results/selection").glob("*/*/*/effects.json"):
        report = json.loads(path.read_text())
        assert list(report)[: len(SEED_KEYS)] == SEED_KEYS
        assert len(report["effects"]) == LLM_LAYERS
        for effect in report["effects"]:
            assert abs(effect * n_samples - round(effect * n_samples)) < 1e-9
        assert report["best_llm_layer"] == max(range(LLM_LAYERS), key=lambda l: (report["effects"][l], -l))
        assert sum(report["stability"]["win_rate"]) == pytest.approx(1.0)
        selection = json.loads(path.with_name("selection.json").read_text())
        assert selection["layer"] == report["best_llm_layer"]
        assert selection["win_rate"] == report["stability"]["win_rate"][selection["layer"]]


def test_selection_samples_never_come_from_test(project):
    _, workdir, _ = project
    for samples in (workdir / "results/hidden").glob("*/*/samples.parquet"):
        dataset = samples.parts[-3]
        ids = set(pd.read_parquet(samples)["row_id"])
        test_ids = set(pd.read_parquet(workdir / f"results/data/{dataset}/test.parquet")["row_id"])
        train_ids = set(pd.read_parquet(workdir / f"results/data/{dataset}/train.parquet")["row_id"])
        assert ids and not ids & test_ids and ids <= train_ids


def test_predictions_cover_the_test_rows(project):
    _, workdir, _ = project
    runs = list((workdir / "results/runs").rglob("predictions.parquet"))
    assert len(runs) == 6
    for path in runs:
        frame = pd.read_parquet(path)
        probs = frame.filter(like="prob_").to_numpy()
        assert list(frame.columns[:3]) == ["row_id", "label", "prediction"]
        assert frame["row_id"].is_unique
        assert (probs.argmax(axis=1) == frame["prediction"]).all()
        metrics = json.loads(path.with_name("metrics.json").read_text())
        assert metrics["accuracy"] == pytest.approx((frame["label"] == frame["prediction"]).mean())


def test_rerun_redoes_only_what_is_stale(project):
    workflow, workdir, config = project
    base = ["--configfile", str(config), "--dry-run"]
    assert scheduled_jobs(snakemake(workflow, workdir, *base).stdout) == {}

    # Touching code without changing it re-runs nothing.
    (workflow / "src/pifi/selection.py").touch()
    (workflow / "workflow/scripts/train.py").touch()
    assert scheduled_jobs(snakemake(workflow, workdir, *base).stdout) == {}

    # Changing top_pc re-runs the effects and everything downstream of them, nothing upstream,
    # and neither base nor pifi_last.
    top1 = workdir / "top_pc.yaml"
    top1.write_text("selection:\n  top_pc: 1\n")
    result = snakemake(workflow, workdir, "--configfile", str(config), str(top1), "--dry-run")
    assert scheduled_jobs(result.stdout) == {
        "layer_effects": 2, "select_layer": 2, "train_pifi": 2, "evaluate": 2, "summarize": 1, "all": 1}
    assert "method=pifi_ilm" in result.stdout and "method=pifi_last" not in result.stdout

    # Editing library code re-runs exactly the rules that use it.
    summary_module = workflow / "src/pifi/summary.py"
    summary_module.write_text(summary_module.read_text() + "\n# an edit\n")
    assert scheduled_jobs(snakemake(workflow, workdir, *base).stdout) == {"summarize": 1, "all": 1}
