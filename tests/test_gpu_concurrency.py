"""The GPU pool under the real snakemake CLI (local executor, --resources gpu=N).

Runs tests/workflows/gpu_pool, whose jobs claim slots with
pifi.gpu.claim_gpus_for_job from a `script:` (each job its own python process),
and checks slot exclusivity (also across two workflows on one lock dir), CPU
jobs beside GPU jobs, and SIGKILL recovery.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

import pytest

from gpu_pool_helpers import claim_in_fresh_process, clean_env, wait_for_file

SNAKEFILE = Path(__file__).parent / "workflows" / "gpu_pool" / "Snakefile"
SNAKEMAKE = [str(Path(sys.executable).with_name("snakemake"))]  # the venv's CLI


def _cmd(workdir: Path, *args: str) -> list[str]:
    return [*SNAKEMAKE, "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *args]


def _run(workdir: Path, lock_dir: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(workdir, *args), capture_output=True, text=True,
                          env=clean_env(lock_dir), timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _records(folder: Path) -> list[dict]:
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    for record in records:
        record["slots"] = [tuple(pair) for pair in record["slots"]]
    return records


def _overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def _max_concurrent(records: list[dict]) -> int:
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    running = peak = 0
    for _, step in events:  # at equal times the end (-1) sorts first
        running += step
        peak = max(peak, running)
    return peak


def _slot_collisions(records: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of jobs that held the same (gpu, slot) at overlapping times."""
    by_slot: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        for pair in record["slots"]:
            by_slot[pair].append(record)
    return [(a, b) for jobs in by_slot.values() for a, b in combinations(jobs, 2) if _overlap(a, b)]


@pytest.fixture
def dirs(tmp_path):
    return tmp_path / "work", tmp_path / "locks"


def test_gpu_jobs_never_share_a_slot(dirs):
    workdir, lock_dir = dirs
    proc = _run(workdir, lock_dir, "--cores", "3", "--resources", "gpu=3",
                "--config", "gpus=[0,1,2]", "n_gpu=12", "gpu_sleep=0.6")
    jobs = _records(workdir / "gpu")
    assert len(jobs) == 12
    for job in jobs:
        assert len(job["gpus"]) == 1 and job["slots"] == [(job["gpus"][0], 0)]
        assert job["cuda_visible_devices"] == str(job["gpus"][0])
    assert {job["gpus"][0] for job in jobs} == {0, 1, 2}
    assert len({job["pid"] for job in jobs}) == 12  # each job its own process
    assert _slot_collisions(jobs) == []
    assert _max_concurrent(jobs) <= 3
    assert _max_concurrent(jobs) >= 2  # the pool did run jobs in parallel
    assert "claimed GPU" in proc.stderr and "slot 0 (pool [0, 1, 2], 1 slot per GPU" in proc.stderr


def test_cpu_jobs_run_beside_gpu_jobs(dirs):
    workdir, lock_dir = dirs
    _run(workdir, lock_dir, "--cores", "3", "--resources", "gpu=2",
         "--config", "gpus=[0,1]", "n_gpu=4", "n_cpu=6", "gpu_sleep=1.0", "cpu_sleep=0.4")
    gpu_jobs, cpu_jobs = _records(workdir / "gpu"), _records(workdir / "cpu")
    assert len(gpu_jobs) == 4 and len(cpu_jobs) == 6
    assert all(job["slots"] == [] and job["cuda_visible_devices"] is None for job in cpu_jobs)
    assert _max_concurrent(gpu_jobs) <= 2
    assert _slot_collisions(gpu_jobs) == []
    # The spare core kept doing CPU work while both GPUs were busy.
    assert any(_overlap(c, g) for c in cpu_jobs for g in gpu_jobs)


def test_two_workflows_on_one_lock_dir_never_share_a_slot(tmp_path):
    """Reliability: 2 x 50 short jobs racing for 2 GPUs x 2 slots through one lock dir."""
    lock_dir, n_jobs = tmp_path / "locks", 50
    pool = {(gpu, slot) for gpu in (0, 1) for slot in (0, 1)}
    workdirs = [tmp_path / "work-a", tmp_path / "work-b"]
    t0 = time.monotonic()
    runs = [subprocess.Popen(
        _cmd(workdir, "--cores", "4", "--resources", "gpu=4",
             "--config", "gpus=[0,1]", "gpu_slots_per_gpu=2", f"n_gpu={n_jobs}",
             "gpu_sleep=0.05", "gpu_sleep_max=0.2"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env(lock_dir))
        for workdir in workdirs]
    for run in runs:
        _, err = run.communicate(timeout=170)
        assert run.returncode == 0, err[-4000:]
    jobs = [job for workdir in workdirs for job in _records(workdir / "gpu")]
    collisions = _slot_collisions(jobs)
    use = Counter(pair for job in jobs for pair in job["slots"])
    print(f"\n{len(jobs)} GPU jobs from 2 workflows on one lock dir (2 GPUs x 2 slots) in "
          f"{time.monotonic() - t0:.1f} s: {len(collisions)} collisions; jobs per (gpu, slot): "
          f"{dict(sorted(use.items()))}; peak concurrency {_max_concurrent(jobs)}")
    assert len(jobs) == 2 * n_jobs
    assert collisions == [], f"a (gpu, slot) held by two jobs at once: {collisions[:3]}"
    assert set(use) == pool  # every slot was used
    assert all(len(job["slots"]) == 1 and job["cuda_visible_devices"] == str(job["slots"][0][0])
               for job in jobs)
    # Both workflows ran side by side, not one after the other.
    assert any(_overlap(a, b) for a in _records(workdirs[0] / "gpu")
               for b in _records(workdirs[1] / "gpu"))


def test_sigkilled_job_frees_its_slot_and_rerun_completes(dirs):
    workdir, lock_dir = dirs
    workdir.mkdir()
    snakemake = subprocess.Popen(
        _cmd(workdir, "--cores", "3", "--resources", "gpu=3",
             "--config", "gpus=[0,1,2]", "hang=1", "--", "hang.json"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env(lock_dir))
    try:
        pid_file = workdir / "hang.pid"
        wait_for_file(pid_file, timeout=60)
        held = json.loads(pid_file.read_text())
        assert held["pid"] != snakemake.pid
        gpus = held["gpus"]
        # While the job lives, its slot is taken ...
        busy = claim_in_fresh_process(lock_dir, gpus, timeout=0.3)
        assert busy.returncode != 0 and "TimeoutError" in busy.stderr
        assert f"pid {held['pid']} on host" in busy.stderr  # the message names the holder
        os.kill(held["pid"], signal.SIGKILL)  # the job's python process, not snakemake
        # ... and after a SIGKILL the kernel has dropped the flock.
        freed = claim_in_fresh_process(lock_dir, gpus, timeout=5)
        assert freed.returncode == 0, freed.stderr
        assert json.loads(freed.stdout) == held["slots"]
        _, err = snakemake.communicate(timeout=60)
        assert snakemake.returncode != 0, "snakemake should report the killed job"
        assert not (workdir / "hang.json").exists()
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
            snakemake.wait()

    _run(workdir, lock_dir, "--cores", "3", "--resources", "gpu=3", "--rerun-incomplete",
         "--config", "gpus=[0,1,2]", "--", "hang.json")
    assert json.loads((workdir / "hang.json").read_text())["gpus"] == gpus
