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

An interrupted job still exits non-zero, and Snakemake would print an error block per job (``Error in
rule``, ``RuleException``, ``WorkflowError``) around that line, as if something had crashed. After a
signal, its console handlers (never its log file under .snakemake/log) drop every further record
(``quiet_console``), so the line that says how to resume is the last thing printed.
"""

from __future__ import annotations

import logging
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
        quiet_console()
        signal_job_processes(signum)
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT:  # SIG_DFL for SIGINT: what Python does by default
            raise KeyboardInterrupt

    return handler


def quiet_console(logger_name: str = "snakemake.logging") -> None:
    """Snakemake's console handlers drop every record from now on; its log file keeps them all."""
    for handler in logging.getLogger(logger_name).handlers:
        if not isinstance(handler, logging.FileHandler) and _drop_all not in handler.filters:
            handler.addFilter(_drop_all)


def _drop_all(record: logging.LogRecord) -> bool:
    return False


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
