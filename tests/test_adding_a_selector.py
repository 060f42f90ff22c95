"""Adding a selector is one file: a module in src/pifi/selectors/ that declares it, and nothing else.

The test copies the workflow, drops a new selector's module into the copy's library and runs it through
``score_layers``, the config checks and the workflow (the jobs import the copy: PYTHONPATH), touching no
other file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from pifi.hidden import load_states
from test_workflow import SNAKEMAKE, copy_workflow, scheduled_jobs
from tiny_project import write_tiny_project

NEW_SELECTOR = textwrap.dedent('''
    """spread: the mean distance of a layer's states from their centroid, to a power (a test's selector)."""

    import numpy as np

    from pifi.selectors._declaration import STATES, Selector


    def spread(layers, labels, *, power):
        return [float(np.mean(np.linalg.norm(x - x.mean(axis=0), axis=1) ** power)) for x in layers], None, {}


    SELECTOR = Selector("spread", STATES, spread, {"power": 1.0}, "mean distance from the centroid")
''')


def expected_spread(states: np.ndarray, power: float) -> list[float]:
    return [float(np.mean(np.linalg.norm(x - x.mean(axis=0), axis=1) ** power)) for x in states]


@pytest.fixture(scope="module")
def copy_with_a_new_selector(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    workflow = copy_workflow(tmp_path_factory.mktemp("new_selector"))
    (workflow / "src/pifi/selectors/spread.py").write_text(NEW_SELECTOR)
    return workflow, {**os.environ, "PYTHONPATH": str(workflow / "src")}


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def test_a_declared_selector_is_scored_by_the_registry(copy_with_a_new_selector):
    workflow, env = copy_with_a_new_selector
    result = run([sys.executable, "-c", textwrap.dedent("""
        import json
        import numpy as np
        import pifi.selectors as s
        states = np.random.default_rng(0).normal(size=(3, 20, 6)).astype(np.float32)
        print(json.dumps({"file": s.__file__, "names": s.SELECTORS,
                          "scores": s.score_layers("spread", states, np.arange(20) % 2, power=2.0)}))
    """)], env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert Path(out["file"]).is_relative_to(workflow)  # the copy's library, not the installed one
    assert "spread" in out["names"]
    states = np.random.default_rng(0).normal(size=(3, 20, 6)).astype(np.float32)
    assert out["scores"] == pytest.approx(expected_spread(states, 2.0), rel=1e-6)


def test_a_declared_selector_runs_in_the_workflow_with_its_settings_checked(copy_with_a_new_selector, tmp_path):
    workflow, env = copy_with_a_new_selector
    config_path = write_tiny_project(tmp_path / "work", datasets=("sentiment",))
    config = yaml.safe_load(config_path.read_text())
    config["run"]["methods"] = ["base", "pifi_ilm"]
    config["selection"].update(selector="spread", selectors=["ilm_pc_patching", "spread"],
                               selector_params={"spread": {"power": 2.0}})
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    base = [str(SNAKEMAKE), "--snakefile", str(workflow / "Snakefile"), "--directory", str(tmp_path / "work"),
            "--cores", "2"]
    configs = ["--configfile", str(config_path)]

    plan = run([*base, "--dry-run", *configs], env)
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-3000:]
    assert scheduled_jobs(plan.stdout).get("layer_scores") == 1
    assert "selector=spread" in plan.stdout

    # Its settings are checked against its declaration before anything runs.
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"selection": {"selector_params": {"spread": {"pow": 2}}}}))
    refused = run([*base, "--dry-run", *configs, str(typo)], env)
    assert refused.returncode != 0
    assert "selection.selector_params.spread.pow: spread has no such setting; its settings are power" in (
        refused.stdout + refused.stderr)

    scores_path = "results/selection/sentiment/tiny_llama/scores/spread.json"
    done = run([*base, scores_path, *configs], env)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / "work" / scores_path).read_text())
    states, _ = load_states(tmp_path / "work/results/hidden/sentiment/tiny_llama/states.safetensors")
    assert report["selector"] == "spread" and report["params"] == {"power": 2.0}
    assert report["scores"] == pytest.approx(expected_spread(np.asarray(states), 2.0), rel=1e-5)
    assert report["best_layer"] == int(np.argmax(report["scores"]))
