"""Unit tests of the GPU slot pool (pifi.gpu), with real flocks across processes."""

from __future__ import annotations

import logging
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from gpu_pool_helpers import (clean_env, no_hang, read_line, start_holder, wait_claimed,
                              wait_claimed_slots)
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
    assert (clean_pool / "gpuGPU-abc.slot0.lock").exists()
    assert gpu._lock_name("MIG-1/2/0", 3) == "gpuMIG-1_2_0.slot3.lock"


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
    assert f"claimed GPU 0 slot 0 (pool [0, 1, 2], 1 slot per GPU, lock dir {clean_pool})" in caplog.text
    assert (clean_pool / "gpu0.slot0.lock").read_text().startswith(f"pid {os.getpid()} ")
    assert gpu.claimed_slots() == [(0, 0)]


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
    assert (tmp_path / "env-locks" / "gpu0.slot0.lock").exists()
    gpu.release_gpus()
    monkeypatch.delenv(gpu.LOCK_DIR_ENV)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    gpu.claim_gpus(1, gpus=[0])
    shared = tmp_path / "tmp" / "pifi-gpu-locks"
    # Shared by all users: dir like /tmp (sticky, world-writable), lock files rw for all.
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "gpu0.slot0.lock").stat().st_mode) == 0o666


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


@pytest.mark.parametrize("slots_per_gpu", [1, 2])
def test_sigkilled_holder_frees_its_slot(clean_pool, procs, slots_per_gpu):
    holders = [start_holder(clean_pool, [0], slots_per_gpu=slots_per_gpu)
               for _ in range(slots_per_gpu)]
    procs.extend(holders)
    held = [wait_claimed_slots(h)[0] for h in holders]
    assert sorted(held) == [(0, slot) for slot in range(slots_per_gpu)]
    with pytest.raises(TimeoutError):
        gpu.claim_gpus(1, gpus=[0], lock_dir=clean_pool, timeout=0, slots_per_gpu=slots_per_gpu)
    os.kill(holders[0].pid, signal.SIGKILL)
    holders[0].wait(timeout=10)
    assert gpu.claim_gpus(1, gpus=[0], lock_dir=clean_pool, timeout=2,
                          slots_per_gpu=slots_per_gpu) == [0]
    assert gpu.claimed_slots() == [held[0]]  # exactly the dead job's slot


class _Resources(dict):
    """Stands in for snakemake's Namedlist: only .get is used."""


def test_claim_gpus_for_job_reads_resources_and_config(clean_pool):
    job = SimpleNamespace(resources=_Resources(gpu=1, _cores=1),
                          config={"gpus": ["0", "1", "2"], "gpu_lock_dir": str(clean_pool)})
    assert gpu.claim_gpus_for_job(job) == [0]  # --config gpus=[0,1,2] gives strings
    assert (clean_pool / "gpu0.slot0.lock").exists()
    gpu.release_gpus()
    cpu_job = SimpleNamespace(resources=_Resources(_cores=1), config={"gpus": [0]})
    assert gpu.claim_gpus_for_job(cpu_job) == []
    assert gpu.claim_gpus_for_job(SimpleNamespace(resources=_Resources(gpu=1),
                                                  config={"gpus": "2,3", "gpu_lock_dir": str(clean_pool)})) == [2]
    gpu.release_gpus()
    with pytest.raises(TypeError, match="list of GPU ids"):
        gpu.claim_gpus_for_job(SimpleNamespace(resources=_Resources(gpu=1), config={"gpus": 0}))


def test_claim_gpus_for_job_reads_slots_and_wait_timeout(clean_pool, procs):
    holder = start_holder(clean_pool, [0], slots_per_gpu=2)
    procs.append(holder)
    assert wait_claimed_slots(holder) == [(0, 0)]
    config = {"gpus": [0], "gpu_lock_dir": str(clean_pool), "gpu_slots_per_gpu": "2"}
    job = SimpleNamespace(resources=_Resources(gpu=1), config=config)
    assert gpu.claim_gpus_for_job(job) == [0] and gpu.claimed_slots() == [(0, 1)]
    gpu.release_gpus()
    # One slot per GPU: slot 0 is the holder's; the config's timeout ends the wait ...
    config.update(gpu_slots_per_gpu=1, gpu_wait_timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out after 0.2 s"):
        gpu.claim_gpus_for_job(job)
    # ... and an explicit timeout wins over it.
    config.update(gpu_wait_timeout="100")
    with pytest.raises(TimeoutError, match="timed out after 0 s"):
        gpu.claim_gpus_for_job(job, timeout=0)
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("key, value", [
    ("gpu_slots_per_gpu", 0), ("gpu_slots_per_gpu", "two"), ("gpu_slots_per_gpu", True),
    ("gpu_slots_per_gpu", 1.5), ("gpu_wait_timeout", "-1"), ("gpu_wait_timeout", "soon"),
])
def test_claim_gpus_for_job_rejects_bad_config(clean_pool, key, value):
    job = SimpleNamespace(resources=_Resources(gpu=1),
                          config={"gpus": [0], "gpu_lock_dir": str(clean_pool), key: value})
    with pytest.raises(ValueError, match=f"config '{key}'"):
        gpu.claim_gpus_for_job(job)
    assert not gpu._held


@pytest.mark.parametrize("slots_per_gpu", [0, -1, 1.0, True, "2"])
def test_claim_gpus_rejects_bad_slots_per_gpu(clean_pool, slots_per_gpu):
    with pytest.raises(ValueError, match="slots_per_gpu"):
        gpu.claim_gpus(1, gpus=[0], lock_dir=clean_pool, slots_per_gpu=slots_per_gpu)


# --- k slots per GPU ----------------------------------------------------------------


def test_slots_spread_over_gpus_then_fill_and_timeout_names_holders(clean_pool, procs, caplog):
    holders = []
    for _ in range(4):  # one after the other, so each sees the previous claims
        holder = start_holder(clean_pool, [0, 1], slots_per_gpu=2)
        procs.append(holder)
        holders.append((holder, wait_claimed_slots(holder)[0]))
    claimed = [pair for _, pair in holders]
    assert sorted(claimed) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # distinct (gpu, slot) pairs
    assert {claimed[0][0], claimed[1][0]} == {0, 1}  # both GPUs in use before any doubles up

    caplog.set_level(logging.INFO, logger="pifi.gpu")
    with pytest.raises(TimeoutError) as err:
        gpu.claim_gpus(1, gpus=[0, 1], lock_dir=clean_pool, slots_per_gpu=2,
                       poll_interval=0.05, timeout=0.3)
    msg = str(err.value)
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert "busy GPUs [0, 1]" in msg and "2 slots per GPU" in msg
    for holder, (gpu_id, slot) in holders:
        assert f"GPU {gpu_id} slot {slot}: pid {holder.pid} on host " in msg
    assert f"user {user}, since 20" in msg
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting")]
    assert len(waiting) == 1  # said once, not once per poll


def test_least_loaded_prefers_most_free_slots_in_pool_order():
    free = {0: [(1, 10)], 1: [(0, 11), (2, 12)], 2: [], 3: [(0, 13), (1, 14)]}
    assert gpu._least_loaded(free, 1) == [1]
    assert gpu._least_loaded(free, 2) == [1, 3]
    assert gpu._least_loaded(free, 3) == [0, 1, 3]
    assert gpu._least_loaded(free, 4) == []  # GPU 2 is full: all or none


def test_three_gpus_four_slots_first_three_jobs_use_three_gpus(clean_pool, procs):
    holders = [start_holder(clean_pool, [0, 1, 2], slots_per_gpu=4) for _ in range(3)]
    # Started together on purpose: the spread must hold under racing claims too.
    procs.extend(holders)
    assert sorted(wait_claimed(h)[0] for h in holders) == [0, 1, 2]


def test_multi_gpu_claim_takes_one_slot_per_gpu(clean_pool):
    assert gpu.claim_gpus(2, gpus=[0, 1, 2], lock_dir=clean_pool, slots_per_gpu=3) == [0, 1]
    assert gpu.claimed_slots() == [(0, 0), (1, 0)]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


@pytest.mark.parametrize("note, expected", [
    (None, "holder unknown (no note in its lock file)"),
    ("garbage", "holder unknown (note 'garbage')"),
    ("pid 77 host far-away user bob since 2026-11-26 12:01:05",
     "pid 77 on host far-away, user bob, since 2026-11-26 12:01:05"),
])
def test_describe_note(note, expected):
    assert gpu._describe_note(note) == expected


def test_describe_note_flags_a_note_whose_process_is_gone():
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    note = f"pid {gone} host {gpu.socket.gethostname()} user bob since 2026-11-26 12:01:05"
    assert "stale note" in gpu._describe_note(note)


# --- a shared lock dir is hostile ground ----------------------------------------------


def _shared_dir(path):
    path.mkdir()
    path.chmod(0o1777)
    return path


def _snapshot(path):
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_size


@pytest.mark.parametrize("victim_exists", [True, False])
def test_planted_symlink_lock_file_is_refused(clean_pool, tmp_path, victim_exists):
    lock_dir = _shared_dir(clean_pool)
    victim = tmp_path / "victim.txt"
    if victim_exists:
        victim.write_text("precious data\n")
        os.utime(victim, ns=(1_000_000_000, 1_000_000_000))
        before = _snapshot(victim)
    link = lock_dir / "gpu0.slot0.lock"
    link.symlink_to(victim)
    with no_hang(10), pytest.raises(gpu.UnsafeLockError) as err:
        gpu.claim_gpus(1, gpus=[0], lock_dir=lock_dir, timeout=0)
    assert f"GPU lock file {link} is a symlink: refusing to use it" in str(err.value)
    assert "PIFI_GPU_LOCK_DIR" in str(err.value)
    if victim_exists:
        assert _snapshot(victim) == before
    else:
        assert not victim.exists()  # not created through the dangling link either
    assert not gpu._held and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_symlink_on_a_later_gpu_leaves_no_lock_behind(clean_pool, tmp_path):
    lock_dir = _shared_dir(clean_pool)
    (lock_dir / "gpu1.slot0.lock").symlink_to(tmp_path / "victim.txt")
    with no_hang(10), pytest.raises(gpu.UnsafeLockError):
        gpu.claim_gpus(1, gpus=[0, 1], lock_dir=lock_dir, timeout=0)
    assert not gpu._held
    # GPU 0's lock, taken before the refusal, was dropped: another process can take it.
    freed = subprocess.run(
        [sys.executable, "-c", "import fcntl, sys; fcntl.flock(open(sys.argv[1]), "
         "fcntl.LOCK_EX | fcntl.LOCK_NB)", str(lock_dir / "gpu0.slot0.lock")],
        capture_output=True, text=True, timeout=30)
    assert freed.returncode == 0, freed.stderr


@pytest.mark.parametrize("plant", ["fifo", "dir"])
def test_non_regular_lock_file_is_refused_without_hanging(clean_pool, plant):
    lock_dir = _shared_dir(clean_pool)
    planted = lock_dir / "gpu0.slot0.lock"
    if plant == "fifo":
        os.mkfifo(planted)
    else:
        planted.mkdir()
    with no_hang(10), pytest.raises(gpu.UnsafeLockError,
                                    match=f"{planted} is not a regular file: refusing"):
        gpu.claim_gpus(1, gpus=[0], lock_dir=lock_dir, timeout=0)


def test_lock_dir_that_is_a_symlink_is_refused(clean_pool, tmp_path):
    real = _shared_dir(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(gpu.UnsafeLockError, match=f"GPU lock dir {link} is a symlink"):
        gpu.claim_gpus(1, gpus=[0], lock_dir=link, timeout=0)
    assert list(real.iterdir()) == []
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(gpu.UnsafeLockError, match="is not a directory"):
        gpu.claim_gpus(1, gpus=[0], lock_dir=not_a_dir, timeout=0)


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o703])
def test_writable_lock_dir_without_sticky_bit_is_refused(clean_pool, mode):
    clean_pool.mkdir()
    clean_pool.chmod(mode)
    with pytest.raises(gpu.UnsafeLockError) as err:
        gpu.claim_gpus(1, gpus=[0], lock_dir=clean_pool, timeout=0)
    msg = str(err.value)
    assert f"GPU lock dir {clean_pool} is writable by group or others (mode {mode:04o})" in msg
    assert f"chmod +t {clean_pool}" in msg and "no sticky bit" in msg
    assert list(clean_pool.iterdir()) == []


@pytest.mark.parametrize("mode", [0o1777, 0o1770, 0o755, 0o700])
def test_sticky_or_private_lock_dir_is_accepted(clean_pool, mode):
    clean_pool.mkdir()
    clean_pool.chmod(mode)
    assert gpu.claim_gpus(1, gpus=[0], lock_dir=clean_pool, timeout=0) == [0]


def test_created_lock_dir_is_sticky_and_world_writable_whatever_the_umask(clean_pool):
    nested = clean_pool / "deeper" / "locks"
    old_umask = os.umask(0o077)
    try:
        assert gpu.claim_gpus(1, gpus=[0], lock_dir=nested, timeout=0) == [0]
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.lstat(nested).st_mode) == 0o1777
    assert stat.S_IMODE((nested / "gpu0.slot0.lock").stat().st_mode) == 0o666


def test_lock_file_of_another_user_is_locked_but_not_written(clean_pool, monkeypatch, procs):
    lock_dir = _shared_dir(clean_pool)
    lock_file = lock_dir / "gpu0.slot0.lock"
    lock_file.write_text("pid 1 host elsewhere user alice since 2026-01-01 00:00:00\n")
    lock_file.chmod(0o666)
    before = _snapshot(lock_file)
    monkeypatch.setattr(gpu.os, "geteuid", lambda: os.getuid() + 4242)  # "we" are not its owner
    assert gpu.claim_gpus(1, gpus=[0], lock_dir=lock_dir, timeout=0) == [0]
    assert _snapshot(lock_file) == before
    # Not written, but locked all the same.
    other = subprocess.run(
        [sys.executable, "-c", "import fcntl, sys; fcntl.flock(open(sys.argv[1]), "
         "fcntl.LOCK_EX | fcntl.LOCK_NB)", str(lock_file)],
        capture_output=True, text=True, timeout=30)
    assert other.returncode != 0 and "BlockingIOError" in other.stderr


def test_hard_linked_lock_file_is_not_written(clean_pool, tmp_path):
    lock_dir = _shared_dir(clean_pool)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    os.link(victim, lock_dir / "gpu0.slot0.lock")
    before = _snapshot(victim)
    assert gpu.claim_gpus(1, gpus=[0], lock_dir=lock_dir, timeout=0) == [0]
    assert _snapshot(victim) == before


def test_own_lock_file_note_is_rewritten_to_its_length(clean_pool):
    lock_dir = _shared_dir(clean_pool)
    lock_file = lock_dir / "gpu0.slot0.lock"
    lock_file.write_text("x" * 300 + "\n")
    gpu.claim_gpus(1, gpus=[0], lock_dir=lock_dir, timeout=0)
    note = lock_file.read_text()
    assert note.count("\n") == 1 and "x" not in note
    assert gpu._NOTE_PATTERN.fullmatch(note.strip()).group(1) == str(os.getpid())
