"""Shared helpers for the GPU pool tests: clean subprocess envs and lock holders."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Claims GPUs, prints the ids and (gpu, slot) pairs as one JSON line, then holds
# them until stdin closes.
_HOLDER = """
import json, logging, sys
from pifi.gpu import claim_gpus, claimed_slots
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
ids = claim_gpus(int(sys.argv[1]), gpus=json.loads(sys.argv[2]), lock_dir=sys.argv[3],
                 poll_interval=0.05, timeout=json.loads(sys.argv[4]),
                 slots_per_gpu=int(sys.argv[5]))
print(json.dumps({"gpus": ids, "slots": claimed_slots()}), flush=True)
sys.stdin.read()
"""


def clean_env(lock_dir: Path | None = None) -> dict[str, str]:
    """os.environ without GPU/SLURM variables that would steer the pool."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "PIFI_GPU_LOCK_DIR")}
    if lock_dir is not None:
        env["PIFI_GPU_LOCK_DIR"] = str(lock_dir)
    return env


def start_holder(lock_dir: Path, gpus: list, count: int = 1, timeout: float | None = None,
                 slots_per_gpu: int = 1) -> subprocess.Popen:
    """A separate process that claims a slot on ``count`` of ``gpus`` and keeps them."""
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(count), json.dumps(gpus), str(lock_dir),
         json.dumps(timeout), str(slots_per_gpu)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env())


def read_line(stream, timeout: float = 10.0) -> str:
    """One line from a child's pipe, failing instead of hanging."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return stream.readline()


def wait_claimed(proc: subprocess.Popen, timeout: float = 10.0) -> list:
    """Block until a holder reports its claim; the claimed GPU ids."""
    return _read_claim(proc, timeout)["gpus"]


def wait_claimed_slots(proc: subprocess.Popen, timeout: float = 10.0) -> list[tuple]:
    """Block until a holder reports its claim; the claimed (gpu, slot) pairs."""
    return [tuple(pair) for pair in _read_claim(proc, timeout)["slots"]]


def _read_claim(proc: subprocess.Popen, timeout: float) -> dict:
    line = read_line(proc.stdout, timeout)
    assert line, f"holder exited early: {proc.stderr.read()}"
    return json.loads(line)


def claim_in_fresh_process(lock_dir: Path, gpus: list, timeout: float,
                           slots_per_gpu: int = 1) -> subprocess.CompletedProcess:
    """Claim one GPU in a throwaway process (so the test process holds nothing).

    Its stdout is the JSON list of claimed (gpu, slot) pairs.
    """
    code = ("import sys, json; from pifi.gpu import claim_gpus, claimed_slots; "
            "claim_gpus(1, gpus=json.loads(sys.argv[1]), lock_dir=sys.argv[2], poll_interval=0.05, "
            "timeout=float(sys.argv[3]), slots_per_gpu=int(sys.argv[4])); "
            "print(json.dumps(claimed_slots()))")
    return subprocess.run([sys.executable, "-c", code, json.dumps(gpus), str(lock_dir), str(timeout),
                           str(slots_per_gpu)],
                          capture_output=True, text=True, env=clean_env(), timeout=60)


def wait_for_file(path: Path, timeout: float) -> None:
    """Poll until ``path`` exists, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.05)


@contextmanager
def no_hang(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the test run) if the block takes longer than ``seconds``.

    SIGALRM interrupts even a blocking open(), e.g. of a FIFO.
    """
    def fail(signum, frame):
        raise AssertionError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
