"""Stopping a run cleanly: a signal reaches the jobs, finished epochs stay, one line says what next.

Snakemake's own handling leaves two gaps (Snakemake 9). A SIGTERM to its process (a process
manager, `kill`) only stops it from starting new jobs: running jobs train to their end, and are then
marked incomplete and retrained from scratch. A SIGINT sent to its process alone (not a terminal's
Ctrl-C, which reaches every process of the group) does the same. So the main process forwards
either signal to its job processes (``forward_signals_to_jobs``, installed by the Snakefile's
``onstart``), and each job turns SIGTERM into the KeyboardInterrupt a Ctrl-C gives
(``stop_on_signals``): training stops at once, its epoch checkpoints (``pifi.resume``) stay, and
the job says "interrupted" in its log instead of printing a crash on the console. The run then
ends with one line (``print_interrupted``, called by ``onerror``).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import psutil

SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED = ("PiFi: interrupted; run the same command again to resume "
               "(finished jobs are kept, training resumes from its last epoch checkpoint)")
_received: list[int] = []


def forward_signals_to_jobs() -> None:
    """In Snakemake's process: on SIGINT or SIGTERM, pass it on to every job process, then do what
    Snakemake's own handler does (stop scheduling, wait for the jobs, which now end promptly)."""
    for signum in SIGNALS:
        previous = signal.getsignal(signum)
        signal.signal(signum, _forwarding_handler(previous))


def _forwarding_handler(previous: Callable | int | None) -> Callable:
    def handler(signum: int, frame) -> None:
        _received.append(signum)
        signal_job_processes(signum)
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT:  # SIG_DFL for SIGINT: what Python does by default
            raise KeyboardInterrupt

    return handler


def signal_job_processes(signum: int) -> None:
    """Send ``signum`` to every descendant of this process (the job shells and their Python);
    processes that ended meanwhile are skipped."""
    for child in psutil.Process().children(recursive=True):
        try:
            child.send_signal(signum)
        except psutil.NoSuchProcess:
            pass


def stop_on_signals() -> None:
    """In a job: SIGTERM raises KeyboardInterrupt like SIGINT, and a second signal (Ctrl-C reaches
    the job directly and again through Snakemake's forwarding) does not interrupt the clean-up of
    the first: the epoch checkpoint being written finishes."""
    def handler(signum: int, frame) -> None:
        for other in SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    for signum in SIGNALS:
        signal.signal(signum, handler)


def print_interrupted(stream=None) -> None:
    """``onerror``: the one line, if the run ended because of a signal (a failure prints nothing here)."""
    if _received:
        print(INTERRUPTED, file=stream or sys.stderr, flush=True)
