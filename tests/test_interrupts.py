"""Signals: a job stops like Ctrl-C on SIGTERM, and Snakemake's process passes a signal on to its jobs.

Real processes and real signals; the end-to-end run (a SIGTERM to Snakemake mid-training, then the
resume) is in test_workflow.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

JOB = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from pifi.interrupts import stop_on_signals

    out = Path(sys.argv[1])
    stop_on_signals()
    (out / "ready").write_text(str(os.getpid()))
    try:
        time.sleep(60)
    except KeyboardInterrupt as error:
        (out / "interrupted").write_text(str(error))
        os.kill(os.getpid(), signal.SIGINT)  # a second signal (Ctrl-C, then Snakemake's forward)
        time.sleep(0.2)  # the clean-up (an epoch checkpoint being written) goes on
        (out / "cleaned_up").write_text("yes")
""")

SNAKEMAKE_LIKE = textwrap.dedent("""
    import signal, subprocess, sys, time
    from pathlib import Path
    from pifi.interrupts import forward_signals_to_jobs, print_interrupted

    out = Path(sys.argv[1])
    graceful = []
    signal.signal(signal.SIGTERM, lambda *_: graceful.append(1))  # Snakemake's own: stop scheduling
    forward_signals_to_jobs()
    job = subprocess.Popen([sys.executable, "-c", sys.argv[2], str(out)])
    while not (out / "ready").exists():
        time.sleep(0.05)
    (out / "parent_ready").write_text("")
    job.wait(timeout=30)
    print("graceful" if graceful else "no graceful", flush=True)
    print_interrupted(sys.stdout)
""")


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigterm_stops_a_job_like_ctrl_c_and_a_second_signal_does_not_cut_its_clean_up(tmp_path):
    job = subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path)])
    wait_for(tmp_path / "ready")
    started = time.monotonic()
    job.send_signal(signal.SIGTERM)
    job.wait(timeout=30)
    assert time.monotonic() - started < 5  # not the 60 s sleep
    assert (tmp_path / "interrupted").read_text() == "signal SIGTERM"
    assert (tmp_path / "cleaned_up").read_text() == "yes"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_snakemakes_process_reaches_its_jobs(tmp_path, signum):
    parent = subprocess.Popen([sys.executable, "-c", SNAKEMAKE_LIKE, str(tmp_path), JOB], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_for(tmp_path / "parent_ready")
    started = time.monotonic()
    parent.send_signal(signum)  # to the parent alone, as a process manager or `kill` does
    out, err = parent.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert (tmp_path / "interrupted").read_text() == f"signal {signal.Signals(signum).name}"
    if signum == signal.SIGTERM:  # Snakemake's own handler still runs after the forward
        assert parent.returncode == 0, err
        assert out.splitlines() == ["graceful", "PiFi: interrupted; run the same command again to resume "
                                    "(finished jobs are kept, training resumes from its last epoch checkpoint)"]
    else:  # SIGINT: Python's KeyboardInterrupt in the parent, as in Snakemake's scheduler loop
        assert "KeyboardInterrupt" in err
