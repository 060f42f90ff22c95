"""Progress that reads well in a terminal and in a log file.

In a terminal: a tqdm bar. In a log file (a job's stderr is redirected there), a bar would be one
line of carriage returns; instead a log line every ``interval`` seconds and one at the end.

A job's log is not where a person looks: ``echo_to_console`` (called by ``pifi.job.start_job``) also
sends those lines, and ``note``'s, to Snakemake's console, at most one per ``ECHO_INTERVAL`` so that a
long job is never silent for longer and a short one adds nothing (notes with ``always`` pass at once).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("pifi.progress")
ECHO_INTERVAL = 60.0  # seconds: the longest console silence a reporting job leaves


class _Echo:
    sink: Callable[[str], None] | None = None
    label = ""
    last = 0.0


def echo_to_console(sink: Callable[[str], None], label: str) -> None:
    """In a job: progress lines and notes also go to ``sink`` (the console) as "PiFi: <label>: <line>"."""
    _Echo.sink, _Echo.label, _Echo.last = sink, label, time.monotonic()


def note(message: str, *, always: bool = False) -> None:
    """A line for the log, echoed to the console (every time with ``always``; else at most every ECHO_INTERVAL)."""
    log.info("%s", message)
    echo(message, always=always)


def echo(message: str, *, always: bool = False) -> None:
    """``message`` on the console only (see ``note``)."""
    now = time.monotonic()
    if _Echo.sink is not None and (always or now - _Echo.last >= ECHO_INTERVAL):
        _Echo.last = now
        _Echo.sink(f"PiFi: {_Echo.label}: {message}")


def progress(iterable: Iterable[T], *, total: int, desc: str, interval: float = 30.0) -> Iterator[T]:
    """Yield from ``iterable``, reporting progress as a bar (TTY) or as periodic log lines."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc)
        return
    started = last = time.monotonic()
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= interval and done < total:
            last = now
            rate = done / (now - started)
            line = (f"{desc}: {done}/{total} ({100 * done / total:.0f}%), {now - started:.0f} s, "
                    f"about {(total - done) / rate:.0f} s left")
            log.info("%s", line)
            echo(line)
    log.info("%s: %d/%d done in %.1f s", desc, done, total, time.monotonic() - started)
