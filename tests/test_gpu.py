"""Unit tests of the GPU slot pool (pifi.gpu), with real flocks across processes."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from gpu_pool_helpers import clean_env, read_line, start_holder, wait_claimed
from pifi import gpu

_real_count_physical_gpus = gpu._count_physical_gpus  # before the fixture fakes it


@pytest.fixture(autouse=True)
def clean_pool(monkeypatch, tmp_path):
    """Each test: no GPU env vars, no held locks, fresh log-once flags, 4 fake physical GPUs."""
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpu.LOCK_DIR_ENV):
        monkeypatch.setenv(name, "")  # records the original so teardown restores it
        monkeypatch.delenv(name)
    monkeypatch.setattr(gpu, "_count_physical_gpus", lambda: 4)
    monkeypatch.setattr(gpu, "_announced", set())
    yield tmp_path / "locks"
    gpu.release_gpus()


@pytest.fixture
def procs():
    """Subprocesses to kill at teardown, whatever the test did."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream:
                stream.close()


def test_cpu_job_touches_nothing(clean_pool, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu.claim_gpus(0, gpus=[0, 1], lock_dir=clean_pool) == []
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert not clean_pool.exists()


def test_pool_from_gpus_argument_first(clean_pool, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    assert gpu.claim_gpus(2, gpus=[5, 6], lock_dir=clean_pool) == [5, 6]


def test_pool_from_visible_devices_second(clean_pool, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu.claim_gpus(2, lock_dir=clean_pool) == [2, 3]


def test_pool_from_physical_count_last(clean_pool):
    assert gpu.claim_gpus(4, lock_dir=clean_pool) == [0, 1, 2, 3]
    gpu.release_gpus()
    with pytest.raises(ValueError, match="pool has only"):
        gpu.claim_gpus(5, lock_dir=clean_pool)


@pytest.mark.parametrize("value, expected", [
    ("0,1,2", [0, 1, 2]),
    (" 1 , 3 ", [1, 3]),
    ("", []),
    ("-1", []),
    ("0,-1,1", [0]),  # CUDA stops at the first invalid entry
    ("GPU-8f3c-aa,MIG-11/2/0", ["GPU-8f3c-aa", "MIG-11/2/0"]),
])
def test_parse_visible_devices(value, expected):
    assert gpu._parse_visible_devices(value) == expected


def test_hidden_gpus_are_honoured(clean_pool, monkeypatch):
    # CUDA_VISIBLE_DEVICES=-1 means "no GPU" even if the machine has four.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu.claim_gpus(1, lock_dir=clean_pool) == []
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "-1"


def test_uuid_pool_and_lock_names(clean_pool):
    ids = gpu.claim_gpus(1, gpus=["GPU-abc", "MIG-1/2/0"], lock_dir=clean_pool)
    assert ids == ["GPU-abc"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-abc"
    assert (clean_pool / "gpuGPU-abc.lock").exists()
    assert gpu._lock_name("MIG-1/2/0") == "gpuMIG-1_2_0.lock"


def test_physical_count_from_proc_then_nvidia_smi(tmp_path, monkeypatch):
    count = _real_count_physical_gpus
    proc = tmp_path / "proc"
    for bus in ("0000:01:00.0", "0000:41:00.0"):
        (proc / bus).mkdir(parents=True)
    monkeypatch.setattr(gpu, "_PROC_GPUS_DIR", proc)
    assert count() == 2

    monkeypatch.setattr(gpu, "_PROC_GPUS_DIR", tmp_path / "absent")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: A (UUID: GPU-a)'\necho '  MIG 1g (UUID: MIG-x)'\n"
                   "echo 'GPU 1: A (UUID: GPU-b)'\necho 'GPU 2: A (UUID: GPU-c)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    assert count() == 3
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert count() == 0


def test_import_and_count_do_not_load_torch():
    # torch.cuda.device_count() would initialise CUDA and freeze CUDA_VISIBLE_DEVICES.
    code = ("import sys, pifi.gpu as g; g._count_physical_gpus(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=clean_env(), timeout=60)


def test_cpu_fallback_logs_once(clean_pool, monkeypatch, caplog):
    monkeypatch.setattr(gpu, "_count_physical_gpus", lambda: 0)
    caplog.set_level(logging.INFO, logger="pifi.gpu")
    assert gpu.claim_gpus(1, lock_dir=clean_pool) == []
    assert gpu.claim_gpus(1, lock_dir=clean_pool) == []
    assert [r.getMessage() for r in caplog.records] == ["no GPU found: running on CPU"]
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not clean_pool.exists()


@pytest.mark.parametrize("visible, expected", [("2", [2]), (None, [])])
def test_slurm_steps_aside(clean_pool, monkeypatch, caplog, visible, expected):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    caplog.set_level(logging.INFO, logger="pifi.gpu")
    assert gpu.claim_gpus(1, gpus=[0, 1, 2], lock_dir=clean_pool) == expected
    assert gpu.claim_gpus(1, gpus=[0, 1, 2], lock_dir=clean_pool) == expected
    assert len(caplog.records) == 1 and "SLURM" in caplog.records[0].getMessage()
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == visible
    assert not clean_pool.exists()


def test_claim_sets_visible_devices_and_logs(clean_pool, caplog):
    caplog.set_level(logging.INFO, logger="pifi.gpu")
    assert gpu.claim_gpus(1, gpus=[0, 1, 2], lock_dir=clean_pool) == [0]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert f"claimed GPU 0 (pool [0, 1, 2], lock dir {clean_pool})" in caplog.text
    assert (clean_pool / "gpu0.lock").read_text().startswith(f"pid {os.getpid()} ")


def test_second_call_in_same_process(clean_pool):
    assert gpu.claim_gpus(2, gpus=[0, 1, 2], lock_dir=clean_pool) == [0, 1]
    assert gpu.claim_gpus(2, gpus=[0, 1, 2], lock_dir=clean_pool, timeout=0) == [0, 1]
    with pytest.raises(RuntimeError, match=r"already holds GPU\(s\) \[0, 1\]"):
        gpu.claim_gpus(1, gpus=[0, 1, 2], lock_dir=clean_pool, timeout=0)
    # Another thread would be another job in the same process: refused, not shared.
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(gpu.claim_gpus, 2, gpus=[0, 1, 2], lock_dir=clean_pool, timeout=0)
        with pytest.raises(RuntimeError, match="another thread"):
            future.result()
    gpu.release_gpus()
    assert gpu.claim_gpus(1, gpus=[2], lock_dir=clean_pool, timeout=0) == [2]


def test_lock_dir_from_env_and_default(clean_pool, monkeypatch, tmp_path):
    monkeypatch.setenv(gpu.LOCK_DIR_ENV, str(tmp_path / "env-locks"))
    gpu.claim_gpus(1, gpus=[0])
    assert (tmp_path / "env-locks" / "gpu0.lock").exists()
    gpu.release_gpus()
    monkeypatch.delenv(gpu.LOCK_DIR_ENV)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    gpu.claim_gpus(1, gpus=[0])
    shared = tmp_path / "tmp" / "pifi-gpu-locks"
    # Shared by all users: dir like /tmp (sticky, world-writable), lock files rw for all.
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "gpu0.lock").stat().st_mode) == 0o666


def test_two_processes_cannot_share_a_slot(clean_pool, procs):
    holder = start_holder(clean_pool, [0, 1])
    procs.append(holder)
    assert wait_claimed(holder) == [0]
    # Same pool from this process: the held slot is skipped, the free one taken.
    assert gpu.claim_gpus(1, gpus=[0, 1], lock_dir=clean_pool, timeout=2) == [1]
    gpu.release_gpus()
    with pytest.raises(TimeoutError):
        gpu.claim_gpus(1, gpus=[0], lock_dir=clean_pool, poll_interval=0.05, timeout=0.3)


def test_timeout_message_names_busy_gpus(clean_pool, procs):
    holder = start_holder(clean_pool, [0, 2], count=2)
    procs.append(holder)
    assert wait_claimed(holder) == [0, 2]
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        gpu.claim_gpus(2, gpus=[0, 1, 2], lock_dir=clean_pool, poll_interval=0.05, timeout=0.4)
    assert 0.35 < time.monotonic() - t0 < 3
    msg = str(err.value)
    assert "busy GPUs [0, 2]" in msg and str(clean_pool) in msg
    assert f"pid {holder.pid}" in msg
    assert not gpu._held and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_all_or_none_does_not_hoard_a_partial_claim(clean_pool, procs):
    holder = start_holder(clean_pool, [1])
    procs.append(holder)
    assert wait_claimed(holder) == [1]
    # A 2-GPU job waits (forever) while only GPU 0 is free ...
    waiter = start_holder(clean_pool, [0, 1], count=2)
    procs.append(waiter)
    assert "waiting for 2 GPU(s): busy GPUs [1]" in read_line(waiter.stderr)
    # ... without sitting on GPU 0: a 1-GPU job can still take it.
    assert gpu.claim_gpus(1, gpus=[0], lock_dir=clean_pool, poll_interval=0.02, timeout=3) == [0]
    holder.kill()
    holder.wait()
    time.sleep(0.3)
    assert waiter.poll() is None  # GPU 1 is free now, but 0 is ours: still waiting
    gpu.release_gpus()
    assert wait_claimed(waiter) == [0, 1]


def test_sigkilled_holder_frees_its_slot(clean_pool, procs):
    holder = start_holder(clean_pool, [0])
    procs.append(holder)
    assert wait_claimed(holder) == [0]
    with pytest.raises(TimeoutError):
        gpu.claim_gpus(1, gpus=[0], lock_dir=clean_pool, timeout=0)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert gpu.claim_gpus(1, gpus=[0], lock_dir=clean_pool, timeout=2) == [0]


class _Resources(dict):
    """Stands in for snakemake's Namedlist: only .get is used."""


def test_claim_gpus_for_job_reads_resources_and_config(clean_pool):
    job = SimpleNamespace(resources=_Resources(gpu=1, _cores=1),
                          config={"gpus": ["0", "1", "2"], "gpu_lock_dir": str(clean_pool)})
    assert gpu.claim_gpus_for_job(job) == [0]  # --config gpus=[0,1,2] gives strings
    assert (clean_pool / "gpu0.lock").exists()
    gpu.release_gpus()
    cpu_job = SimpleNamespace(resources=_Resources(_cores=1), config={"gpus": [0]})
    assert gpu.claim_gpus_for_job(cpu_job) == []
    assert gpu.claim_gpus_for_job(SimpleNamespace(resources=_Resources(gpu=1),
                                                  config={"gpus": "2,3", "gpu_lock_dir": str(clean_pool)})) == [2]
    gpu.release_gpus()
    with pytest.raises(TypeError, match="list of GPU ids"):
        gpu.claim_gpus_for_job(SimpleNamespace(resources=_Resources(gpu=1), config={"gpus": 0}))
