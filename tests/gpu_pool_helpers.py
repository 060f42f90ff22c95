"""Shared helpers for the GPU pool tests: clean subprocess envs and lock holders."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

# Claims GPUs, prints the ids as one JSON line, then holds them until stdin closes.
_HOLDER = """
import json, logging, sys
from pifi.gpu import claim_gpus
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
ids = claim_gpus(int(sys.argv[1]), gpus=json.loads(sys.argv[2]), lock_dir=sys.argv[3],
                 poll_interval=0.05, timeout=json.loads(sys.argv[4]))
print(json.dumps(ids), flush=True)
sys.stdin.read()
"""


def clean_env(lock_dir: Path | None = None) -> dict[str, str]:
    """os.environ without GPU/SLURM variables that would steer the pool."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "PIFI_GPU_LOCK_DIR")}
    if lock_dir is not None:
        env["PIFI_GPU_LOCK_DIR"] = str(lock_dir)
    return env


def start_holder(lock_dir: Path, gpus: list, count: int = 1,
                 timeout: float | None = None) -> subprocess.Popen:
    """A separate process that claims ``count`` of ``gpus`` and keeps them."""
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(count), json.dumps(gpus), str(lock_dir),
         json.dumps(timeout)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env())


def read_line(stream, timeout: float = 10.0) -> str:
    """One line from a child's pipe, failing instead of hanging."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return stream.readline()


def wait_claimed(proc: subprocess.Popen, timeout: float = 10.0) -> list:
    """Block until a holder reports its claimed ids."""
    line = read_line(proc.stdout, timeout)
    assert line, f"holder exited early: {proc.stderr.read()}"
    return json.loads(line)


def claim_in_fresh_process(lock_dir: Path, gpus: list, timeout: float) -> subprocess.CompletedProcess:
    """Claim one GPU in a throwaway process (so the test process holds nothing)."""
    code = ("import sys, json; from pifi.gpu import claim_gpus; "
            "print(json.dumps(claim_gpus(1, gpus=json.loads(sys.argv[1]), "
            "lock_dir=sys.argv[2], poll_interval=0.05, timeout=float(sys.argv[3]))))")
    return subprocess.run([sys.executable, "-c", code, json.dumps(gpus), str(lock_dir), str(timeout)],
                          capture_output=True, text=True, env=clean_env(), timeout=60)


def wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.05)
