"""Progress that reads well in a terminal and in a log file.

In a terminal: a tqdm bar. In a log file (a job's stderr is redirected there), a bar would be one
line of carriage returns; instead a log line every ``interval`` seconds and one at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("pifi.progress")


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
            log.info("%s: %d/%d (%.0f%%), %.0f s, about %.0f s left", desc, done, total, 100 * done / total,
                     now - started, (total - done) / rate)
    log.info("%s: %d/%d done in %.1f s", desc, done, total, time.monotonic() - started)
