"""Workflows run through snakemake-executor-plugin-slurm on a real single-node SLURM.

The cluster comes from the `slurm_cluster` fixture (tests/slurm_cluster.py: needs root
and apt, skips otherwise). Each test proves that its jobs went through sbatch: every
non-local job has a "submitted with SLURM jobid N" line, N's per-job log file under
.snakemake/slurm_logs/, and slurmctld reports N as COMPLETED.

Run: pytest -m slurm tests/test_slurm.py
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:  # a runtime import would precede pytest's assertion rewriting of it
    from slurm_cluster import SlurmCluster

# Registers the session-scoped `slurm_cluster` fixture defined in tests/slurm_cluster.py.
pytest_plugins = ("slurm_cluster",)
pytestmark = pytest.mark.slurm

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
TOY_SNAKEFILE = TESTS / "workflows" / "slurm_toy" / "Snakefile"

# Executor settings for this test cluster only (a real cluster keeps the defaults):
SLURM_TEST_ARGS = (
    # No accounting database here, so sacct cannot answer; squeue can while
    # MinJobAge (1 h in slurm_cluster.py) >= 3x the first-check delay below.
    "--slurm-status-command", "squeue",
    # First status check after 2 s instead of 40 s: the toy jobs take about a second.
    "--slurm-init-seconds-before-status-checks", "2",
    # Keep the per-job SLURM logs of successful jobs: the tests check they exist.
    "--slurm-keep-successful-logs",
)
# A node here has no GPU and little memory; the CPU variant of the profile caps these.
TEST_MEM_MB_CAP = 2000

_SUBMITTED = re.compile(
    r"Job (?P<job>\d+) has been submitted with SLURM jobid (?P<slurm>\d+) \(log: (?P<log>.+?)\)\."
)
# A job header in Snakemake's log: "rule NAME:", "checkpoint NAME:" or "localrule NAME:", then its
# indented fields, among them "jobid: N".
_JOB_HEADER = re.compile(
    r"^(?P<local>local)?(?:rule|checkpoint) (?P<rule>\w+):\n(?:[ \t]+.*\n)*?[ \t]+jobid: (?P<job>\d+)$",
    re.MULTILINE
)


def snakemake_env(cluster: SlurmCluster) -> dict[str, str]:
    """The cluster's env with this venv first on PATH, as after `source .venv/bin/activate`
    (jobs inherit it through sbatch --export=ALL)."""
    env = dict(cluster.env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_snakemake(
    args: Sequence[str], cwd: Path, env: dict[str, str], timeout: float, log: Path
) -> tuple[int, str]:
    """Run snakemake, bounded by `timeout`; returns (exit code, combined output)."""
    cmd = [sys.executable, "-m", "snakemake", *map(str, args)]
    with log.open("w") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGINT makes Snakemake scancel its jobs and exit; SIGTERM does not stop it.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            pytest.fail(f"snakemake ran over {timeout:.0f} s; log {log}:\n{_tail(log)}")
    return rc, log.read_text(errors="replace")


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def assert_ran_through_slurm(
    cluster: SlurmCluster, output: str, rules: Iterable[str]
) -> dict[str, str]:
    """Every non-local job of `output` was sbatch-ed and COMPLETED; returns
    {SLURM job id: rule}. `rules` must all have had at least one job."""
    jobs = {m["job"]: (m["rule"], bool(m["local"])) for m in _JOB_HEADER.finditer(output)}
    submitted = {m["job"]: m for m in _SUBMITTED.finditer(output)}
    remote = {job for job, (_, local) in jobs.items() if not local}
    assert remote, "no non-local jobs in the log"
    assert set(submitted) == remote, (
        f"jobs without a SLURM submission: {sorted(remote - set(submitted))}; "
        f"submissions without a job: {sorted(set(submitted) - remote)}"
    )
    missing_rules = set(rules) - {jobs[job][0] for job in remote}
    assert not missing_rules, f"rules that never ran as SLURM jobs: {sorted(missing_rules)}"
    slurm_ids = {m["slurm"]: jobs[job][0] for job, m in submitted.items()}
    for m in submitted.values():
        # The plugin's per-job sbatch --output file, e.g. .snakemake/slurm_logs/rule_x/7.log
        assert Path(m["log"]).is_file(), f"no SLURM log file {m['log']}"
    states = cluster.job_states(sorted(slurm_ids))
    assert states == dict.fromkeys(slurm_ids, "COMPLETED"), f"slurmctld says {states}"
    return slurm_ids


def cpu_profile(dest: Path, rules: Iterable[str]) -> Path:
    """profiles/slurm for a GPU-less test node: `gpu: 0` for every rule (sbatch rejects
    --gpus=1 on a node without GPUs), memory capped so jobs fit side by side, threads
    capped to the node's CPUs. Everything else is the real profile.

    A derived file rather than --set-resources on the command line, because the
    command line would replace the profile's whole set-resources mapping.
    """
    profile = yaml.safe_load(PROFILE.read_text())
    per_rule: dict[str, dict] = profile.setdefault("set-resources", {})
    for rule in rules:
        per_rule.setdefault(rule, {})
    for resources in (*per_rule.values(), profile.setdefault("default-resources", {})):
        resources["gpu"] = 0
        if "mem_mb" in resources:
            resources["mem_mb"] = min(int(resources["mem_mb"]), TEST_MEM_MB_CAP)
    profile["max-threads"] = os.cpu_count() or 1
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def test_toy_workflow_runs_through_sbatch(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    workdir = tmp_path / "toy"
    workdir.mkdir()
    start = time.monotonic()
    rc, output = run_snakemake(
        [
            "--snakefile", TOY_SNAKEFILE, "--directory", workdir,
            "--executor", "slurm", "--jobs", "4", "--latency-wait", "5",
            *SLURM_TEST_ARGS,
        ],
        cwd=workdir, env=snakemake_env(slurm_cluster), timeout=300,
        log=tmp_path / "snakemake.log",
    )
    assert rc == 0, f"snakemake exited {rc}:\n{_tail(tmp_path / 'snakemake.log')}"
    slurm_ids = assert_ran_through_slurm(slurm_cluster, output, rules=["hello", "combine"])
    assert sorted(slurm_ids.values()) == ["combine", "hello", "hello"]

    # Each job wrote the id SLURM ran it under: exactly the ids sbatch handed out.
    combined = (workdir / "combined.txt").read_text()
    ran_under = re.findall(r"slurm_job=(\d*)", combined)
    assert sorted(ran_under) == sorted(slurm_ids), combined
    print(f"toy: {time.monotonic() - start:.0f} s, SLURM jobs {slurm_ids}")


def test_tiny_pipeline_through_slurm_profile(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    snakefile = REPO / "Snakefile"
    if not snakefile.is_file():
        pytest.skip(f"pipeline not written yet: no {snakefile}")
    if not (TESTS / "tiny_project.py").is_file():
        pytest.skip("tests/tiny_project.py (write_tiny_project) not written yet")
    from tiny_project import write_tiny_project

    root = tmp_path / "project"
    root.mkdir()
    config = write_tiny_project(root, seeds=(1,), datasets=("topics",))
    # Every rule, fewest jobs: the race without the sweep trains its own first rungs (with pifi_sweep it
    # would read the sweep's runs instead).
    settings = yaml.safe_load(config.read_text())
    settings["run"]["methods"] = ["base", "pifi_last", "pifi_ilm", "pifi_race"]
    settings["sweep"] = {"layers": "all"}
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    env = snakemake_env(slurm_cluster)
    base = ["--snakefile", snakefile, "--directory", root, "--configfile", config]

    listed = subprocess.run(
        [sys.executable, "-m", "snakemake", *map(str, base), "--list-rules"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    rules = listed.stdout.split()
    profile = cpu_profile(tmp_path / "profile", rules)

    start = time.monotonic()
    rc, output = run_snakemake(
        [*base, "--profile", profile, *SLURM_TEST_ARGS],
        cwd=root, env=env, timeout=2400, log=tmp_path / "snakemake.log",
    )
    assert rc == 0, f"snakemake exited {rc}:\n{_tail(tmp_path / 'snakemake.log', 120)}"
    summary = root / "results" / "summary" / "summary.csv"
    assert summary.is_file(), f"no {summary}"
    assert len(summary.read_text().splitlines()) >= 2, "summary.csv has no rows"
    # The tiny config exercises every rule: each one the profile names must have run
    # as a SLURM job (this also catches profile entries for renamed rules).
    profile_rules = yaml.safe_load(PROFILE.read_text())["set-resources"]
    slurm_ids = assert_ran_through_slurm(slurm_cluster, output, rules=profile_rules)
    print(f"pipeline: {time.monotonic() - start:.0f} s, {len(slurm_ids)} SLURM jobs {slurm_ids}")
