"""GPU slot pool: each GPU job claims its own slot(s) when it starts.

Snakemake's local executor only *counts* the ``gpu`` resource
(``--resources gpu=12``); it never tells a job which GPU to use. So a job calls
:func:`claim_gpus` (or :func:`claim_gpus_for_job` from a ``script:``) before it
touches CUDA. One training job cannot fill a modern GPU, so each GPU offers
``slots_per_gpu`` slots, one lock file each (``gpu<ID>.slot<j>.lock``). A job
takes one slot on each of the GPUs it needs with a non-blocking ``flock``,
preferring the GPUs with the most free slots, and sets
``CUDA_VISIBLE_DEVICES`` to the claimed GPU ids. ``--resources gpu=N`` then
counts slots: N = GPUs x slots per GPU.

The locks are held until the process exits; the kernel drops them even when
the job is SIGKILLed, so a dead job never leaves a stale slot. The note a job
writes into its lock file (pid, host, user, time) is for humans and timeout
messages only: the flock is the truth.

The default lock dir (``<tmp>/pifi-gpu-locks``) is shared by every user of the
machine, so it is treated as hostile ground: a lock file is never followed
through a symlink, must be a regular file, and is written only when this user
owns it alone; the dir itself must be a real directory, and sticky if others
may write to it. The lock dir must be on a local file system (one pool per
machine).

Under SLURM (``SLURM_JOB_ID`` set) the pool steps aside: SLURM has already
chosen the GPU and exported ``CUDA_VISIBLE_DEVICES``.

This module must never import torch: ``torch.cuda.device_count()``
initialises CUDA, after which ``CUDA_VISIBLE_DEVICES`` no longer has effect.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "GpuId",
    "UnsafeLockError",
    "claim_gpus",
    "claim_gpus_for_job",
    "claimed_slots",
    "count_gpus",
    "default_lock_dir",
    "release_gpus",
]

GpuId = int | str
"""A CUDA device id: an index (``1``) or a UUID (``"GPU-8f3c..."``, ``"MIG-..."``)."""

LOCK_DIR_ENV = "PIFI_GPU_LOCK_DIR"
_PROC_GPUS_DIR = Path("/proc/driver/nvidia/gpus")
_log = logging.getLogger(__name__)

# O_NOFOLLOW: a planted symlink must not redirect us to a victim file.
# O_NONBLOCK: a planted FIFO must not hang the job in open().
_LOCK_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOTE_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_OPEN_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PRIVATE_DIR_HINT = "use a private lock dir (gpu_lock_dir / $PIFI_GPU_LOCK_DIR)"
_NOTE_MAX_BYTES = 512
_NOTE_PATTERN = re.compile(r"pid (\d+) host (\S+) user (\S+) since (.+)")

# Claimed GPU id -> (slot, open lock fd). Module-level so the fds (and their
# flocks) live exactly as long as the process.
_held: dict[GpuId, tuple[int, int]] = {}
_held_by_thread: int | None = None
# "Say it once" flags, so a job calling claim_gpus twice does not log twice.
_announced: set[str] = set()


class UnsafeLockError(RuntimeError):
    """The lock dir or a lock file in it is not safe to use (symlink, FIFO, open dir, ...)."""


@dataclass(frozen=True)
class _Pool:
    """What one claim works on: the GPU ids, their slots and the opened lock dir."""

    ids: list[GpuId]
    slots_per_gpu: int
    lock_dir: Path
    dir_fd: int

    def describe(self) -> str:
        per_gpu = "1 slot" if self.slots_per_gpu == 1 else f"{self.slots_per_gpu} slots"
        return f"pool {self.ids}, {per_gpu} per GPU, lock dir {self.lock_dir}"


def default_lock_dir() -> Path:
    """``$PIFI_GPU_LOCK_DIR`` if set, else ``<tempdir>/pifi-gpu-locks``."""
    env = os.environ.get(LOCK_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "pifi-gpu-locks"


def claim_gpus(
    count: int,
    *,
    slots_per_gpu: int = 1,
    gpus: Sequence[GpuId] | None = None,
    lock_dir: str | os.PathLike[str] | None = None,
    poll_interval: float = 0.5,
    timeout: float | None = None,
    logger: logging.Logger | None = None,
) -> list[GpuId]:
    """Claim one slot on each of ``count`` distinct GPUs, all or none, and expose only them.

    Args:
        count: GPUs the job needs; ``<= 0`` means a CPU job (returns ``[]`` and
            changes nothing).
        slots_per_gpu: jobs one GPU may run at once (config key
            ``gpu_slots_per_gpu``); every run sharing a lock dir should use the
            same value.
        gpus: the pool (config key ``gpus``), trusted as given. Default: the
            ids in ``CUDA_VISIBLE_DEVICES``, else ``0..n-1`` for the ``n``
            physical GPUs (counted without initialising CUDA).
        lock_dir: where the ``gpu<ID>.slot<j>.lock`` files live; default
            :func:`default_lock_dir`. Created with mode 01777 if missing.
        poll_interval: seconds between tries while too few GPUs have a free slot.
        timeout: give up after this many seconds (``None``: wait forever).
        logger: where to say which GPU and slot were claimed; default this module's.

    Returns:
        The claimed GPU ids in pool order, also written to
        ``CUDA_VISIBLE_DEVICES``; :func:`claimed_slots` tells the slots.
        ``[]`` when the machine has no GPU (the job runs on CPU). Under SLURM:
        the ids SLURM exposed, nothing locked.

    Raises:
        ValueError: ``count`` exceeds the pool size (it could never succeed),
            or ``slots_per_gpu`` is not an integer >= 1.
        RuntimeError: called again in this process with a different ``count``
            or from another thread (a second claim would wait on this process's
            own locks forever; and ``CUDA_VISIBLE_DEVICES`` is per process, so
            one process is one job: use ``script:``, not ``run:`` under
            ``--force-use-threads``).
        UnsafeLockError: the lock dir or a lock file is a symlink, not a
            regular file/directory, or the dir is writable by others without
            the sticky bit. Nothing was written.
        TimeoutError: ``timeout`` passed; the message names the busy GPUs and
            each busy slot's holder (pid, host, user, since when).
    """
    log = logger or _log
    _check_slots_per_gpu(slots_per_gpu)
    if count <= 0:
        return []
    if _held:
        return _held_again(count)
    if "SLURM_JOB_ID" in os.environ:
        ids = _parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        _log_once(log, "slurm", "SLURM job %s: GPU pool steps aside, SLURM exposes GPU(s) %s",
                  os.environ["SLURM_JOB_ID"], ids)
        return ids

    ids = _resolve_pool(gpus)
    if not ids:
        _log_once(log, "cpu", "no GPU found: running on CPU")
        return []
    if count > len(ids):
        raise ValueError(f"job needs {count} GPU(s) but the pool has only {ids}")

    lock_path = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    pool = _Pool(ids, slots_per_gpu, lock_path, _open_lock_dir(lock_path))
    try:
        taken = _wait_for_slots(pool, count, poll_interval, timeout, log)
    finally:
        os.close(pool.dir_fd)  # the lock fds stay valid without it
    return _take_over(taken, pool, log)


def claim_gpus_for_job(snakemake: Any, *, logger: logging.Logger | None = None,
                       timeout: float | None = None) -> list[GpuId]:
    """Claim the GPUs a Snakemake job declared (``resources: gpu=N``).

    Duck-typed on the ``snakemake`` object a ``script:`` receives: reads
    ``resources.get("gpu", 0)`` and the config keys ``gpus`` (pool),
    ``gpu_lock_dir``, ``gpu_slots_per_gpu`` (default 1) and
    ``gpu_wait_timeout`` (seconds; absent or null: wait forever). An explicit
    ``timeout`` wins over the config (``math.inf`` waits forever whatever the
    config says). Call it before anything touches CUDA.
    """
    resources = getattr(snakemake, "resources", None)
    count = int((resources.get("gpu", 0) if resources is not None else 0) or 0)
    config: Mapping[str, Any] = getattr(snakemake, "config", None) or {}
    if timeout is None:
        timeout = _timeout_from_config(config.get("gpu_wait_timeout"))
    return claim_gpus(count, slots_per_gpu=_slots_from_config(config.get("gpu_slots_per_gpu", 1)),
                      gpus=_pool_from_config(config.get("gpus")),
                      lock_dir=config.get("gpu_lock_dir"), timeout=timeout, logger=logger)


def claimed_slots() -> list[tuple[GpuId, int]]:
    """The ``(gpu, slot)`` pairs this process holds, in claim order (``[]`` if none)."""
    return [(gpu, slot) for gpu, (slot, _) in _held.items()]


def release_gpus() -> None:
    """Drop this process's GPU locks (normally left to process exit).

    ``CUDA_VISIBLE_DEVICES`` is left as is: CUDA may already have read it.
    """
    while _held:
        _, (_, fd) = _held.popitem()
        os.close(fd)  # closing the only fd releases the flock


# --- the claim -----------------------------------------------------------------


def _check_slots_per_gpu(slots_per_gpu: int) -> None:
    if isinstance(slots_per_gpu, bool) or not isinstance(slots_per_gpu, int) or slots_per_gpu < 1:
        raise ValueError(f"slots_per_gpu (config gpu_slots_per_gpu) must be an integer >= 1, "
                         f"got {slots_per_gpu!r}")


def _held_again(count: int) -> list[GpuId]:
    # Same process, second call: hand back what it holds rather than wait on
    # its own locks (flocks on separate fds conflict in-process). Another
    # thread is another job sharing this process: refuse.
    if count == len(_held) and threading.get_ident() == _held_by_thread:
        return list(_held)
    raise RuntimeError(
        f"this process already holds GPU(s) {list(_held)}: cannot claim {count} "
        "again here or from another thread (one GPU job per process; "
        "call release_gpus() first)"
    )


def _wait_for_slots(pool: _Pool, count: int, poll_interval: float, timeout: float | None,
                    log: logging.Logger) -> dict[GpuId, tuple[int, int]]:
    """Try until ``count`` GPUs have a free slot; the taken ``{gpu: (slot, fd)}``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting_said = False
    while True:
        taken, busy = _try_claim(pool, count)
        if taken is not None:
            return taken
        full = _full_gpus(pool, busy)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout:g} s waiting for {count} GPU(s): busy GPUs {full} "
                f"({pool.describe()}); holders: {_describe_holders(pool, busy)}"
            )
        if not waiting_said:
            log.info("waiting for %d GPU(s): busy GPUs %s (%s)", count, full, pool.describe())
            waiting_said = True
        time.sleep(poll_interval if deadline is None
                   else max(0.0, min(poll_interval, deadline - time.monotonic())))


def _try_claim(pool: _Pool,
               count: int) -> tuple[dict[GpuId, tuple[int, int]] | None, list[tuple[GpuId, int]]]:
    """One all-or-none pass: the taken ``{gpu: (slot, fd)}`` (or None) and the busy slots.

    Every free slot is locked for the length of the pass, so the free counts
    that choose the GPUs are exact; all but the kept slots are dropped at once.
    """
    free: dict[GpuId, list[tuple[int, int]]] = {gpu: [] for gpu in pool.ids}
    busy: list[tuple[GpuId, int]] = []
    kept: dict[GpuId, tuple[int, int]] = {}
    try:
        for gpu in pool.ids:
            for slot in range(pool.slots_per_gpu):
                fd = _try_lock_slot(pool, gpu, slot)
                if fd is None:
                    busy.append((gpu, slot))
                else:
                    free[gpu].append((slot, fd))
        # Never sit on a partial claim: two 2-GPU jobs holding one each would deadlock.
        kept = {gpu: free[gpu][0] for gpu in _least_loaded(free, count)}
    finally:
        _close_unkept(free, kept)
    if not kept:
        return None, busy
    for _, fd in kept.values():
        _write_holder(fd)
    return kept, busy


def _least_loaded(free: dict[GpuId, list[tuple[int, int]]], count: int) -> list[GpuId]:
    """The ``count`` GPUs with the most free slots (ties: pool order), in pool order; [] if too few."""
    candidates = [gpu for gpu, slots in free.items() if slots]
    if len(candidates) < count:
        return []
    chosen = set(sorted(candidates, key=lambda gpu: -len(free[gpu]))[:count])  # sort is stable
    return [gpu for gpu in free if gpu in chosen]


def _close_unkept(free: dict[GpuId, list[tuple[int, int]]],
                  kept: dict[GpuId, tuple[int, int]]) -> None:
    kept_fds = {fd for _, fd in kept.values()}
    for slots in free.values():
        for _, fd in slots:
            if fd not in kept_fds:
                os.close(fd)


def _full_gpus(pool: _Pool, busy: list[tuple[GpuId, int]]) -> list[GpuId]:
    """GPUs with every slot taken."""
    return [gpu for gpu in pool.ids
            if sum(1 for busy_gpu, _ in busy if busy_gpu == gpu) == pool.slots_per_gpu]


def _take_over(taken: dict[GpuId, tuple[int, int]], pool: _Pool,
               log: logging.Logger) -> list[GpuId]:
    """Record the claim for this process, expose the GPUs to CUDA and say so."""
    global _held_by_thread
    _held.update(taken)
    _held_by_thread = threading.get_ident()
    ids = list(taken)
    _warn_if_cuda_started(log)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in ids)
    slots = ", ".join(f"GPU {gpu} slot {slot}" for gpu, (slot, _) in taken.items())
    log.info("claimed %s (%s)", slots, pool.describe())
    return ids


def _try_lock_slot(pool: _Pool, gpu: GpuId, slot: int) -> int | None:
    """The slot's locked fd, or None when another process holds it."""
    fd = _open_lock_file(pool, _lock_name(gpu, slot))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_name(gpu: GpuId, slot: int) -> str:
    return "gpu" + re.sub(r"[^A-Za-z0-9._-]", "_", str(gpu)) + f".slot{slot}.lock"


# --- the lock dir and lock files, on shared ground ----------------------------------


def _open_lock_dir(path: Path) -> int:
    """An fd of the checked lock dir (created if missing); lock files are opened relative to it.

    Working through the fd means the dir checked is the dir used, even if its
    path is swapped afterwards.
    """
    _create_shared_dir_if_missing(path)
    try:
        fd = os.open(path, _DIR_OPEN_FLAGS)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        what = "is a symlink" if os.path.islink(path) else "is not a directory"
        raise UnsafeLockError(
            f"GPU lock dir {path} {what}: refusing to use it; point gpu_lock_dir / "
            f"${LOCK_DIR_ENV} at a real directory (a symlink there could redirect the locks)"
        ) from exc
    try:
        _check_lock_dir_mode(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create_shared_dir_if_missing(path: Path) -> None:
    # World-writable + sticky like /tmp: every user's jobs share the pool, but
    # nobody can delete or replace another user's lock file (which would split the lock).
    if os.path.lexists(path):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o1777)
    except FileExistsError:
        return  # made by another process just now: checked like any existing dir
    fd = os.open(path, _DIR_OPEN_FLAGS)
    try:
        os.fchmod(fd, 0o1777)  # mkdir's mode went through the umask
    finally:
        os.close(fd)


def _check_lock_dir_mode(path: Path, st: os.stat_result) -> None:
    mode = st.st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        raise UnsafeLockError(
            f"GPU lock dir {path} is writable by group or others (mode "
            f"{stat.S_IMODE(mode):04o}) but has no sticky bit: anyone who can write there could "
            "delete or swap a lock file (two jobs on one GPU) or plant a link. Fix it with "
            f"`chmod +t {path}` (a pool shared by all users, like /tmp), or `chmod go-w {path}`, "
            f"or {_PRIVATE_DIR_HINT}"
        )


def _open_lock_file(pool: _Pool, name: str) -> int:
    """Open (or create) a lock file in the lock dir: a regular file, never through a link."""
    path = pool.lock_dir / name
    while True:
        try:
            fd = os.open(name, _LOCK_OPEN_FLAGS, dir_fd=pool.dir_fd)
        except FileNotFoundError:
            # Open an existing file without O_CREAT above: Linux's fs.protected_regular
            # refuses O_CREAT on another user's file in a sticky world-writable dir.
            fd = _create_lock_file(pool, name)
            if fd is None:
                continue  # another process created it just now: open theirs
        except OSError as exc:
            raise _lock_file_error(path, pool.lock_dir, exc) from exc
        _require_regular_file(fd, path)
        return fd


def _create_lock_file(pool: _Pool, name: str) -> int | None:
    """A new lock file readable and writable by all, or None if it exists already."""
    try:
        fd = os.open(name, _LOCK_OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=pool.dir_fd)
    except FileExistsError:
        return None
    except OSError as exc:
        raise _lock_file_error(pool.lock_dir / name, pool.lock_dir, exc) from exc
    os.fchmod(fd, 0o666)  # undo the umask so other users can lock it too
    return fd


def _lock_file_error(path: Path, lock_dir: Path, exc: OSError) -> Exception:
    """A clear error for a lock file that could not be opened."""
    if exc.errno == errno.ELOOP:
        return UnsafeLockError(f"GPU lock file {path} is a symlink: refusing to use it; "
                               f"remove it or {_PRIVATE_DIR_HINT}")
    if exc.errno in (errno.EISDIR, errno.ENXIO):  # a directory; a socket
        return UnsafeLockError(f"GPU lock file {path} is not a regular file: refusing to use it; "
                               f"remove it or {_PRIVATE_DIR_HINT}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionError(
            exc.errno,
            f"cannot open or create GPU lock file {path}: permission denied (every user of a "
            f"shared pool needs lock files of mode 0666 in a dir of mode 1777); ask the owner "
            f"of {path} or {lock_dir} to fix the mode, or {_PRIVATE_DIR_HINT}",
        )
    return exc


def _require_regular_file(fd: int, path: Path) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeLockError(f"GPU lock file {path} is not a regular file: refusing to use it; "
                              f"remove it or {_PRIVATE_DIR_HINT}")


def _write_holder(fd: int) -> None:
    # For `cat gpu1.slot0.lock` and timeout messages; stale after a crash.
    # Only into a file this user owns alone: another user's file is theirs, and
    # a second link (st_nlink > 1) could make the write land in a victim file.
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_nlink != 1:
        return
    note = _holder_note().encode()
    os.pwrite(fd, note, 0)
    os.ftruncate(fd, len(note))


def _holder_note() -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"pid {os.getpid()} host {socket.gethostname()} user {_user_name()} since {since}\n"


def _user_name() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return f"uid{uid}"


# --- naming the holders of busy slots --------------------------------------------


def _describe_holders(pool: _Pool, busy: list[tuple[GpuId, int]]) -> str:
    notes = [f"GPU {gpu} slot {slot}: {_describe_note(_read_note(pool, _lock_name(gpu, slot)))}"
             for gpu, slot in busy]
    return "; ".join(notes) or "none"


def _read_note(pool: _Pool, name: str) -> str | None:
    """The holder note of a lock file, read as safely as it is written; None if unreadable."""
    try:
        fd = os.open(name, _NOTE_OPEN_FLAGS, dir_fd=pool.dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = os.read(fd, _NOTE_MAX_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    # Another user wrote it: keep it to one printable line in our messages.
    return "".join(c for c in raw.decode("utf-8", "replace") if c.isprintable()).strip()


def _describe_note(note: str | None) -> str:
    if not note:
        return "holder unknown (no note in its lock file)"
    match = _NOTE_PATTERN.fullmatch(note)
    if match is None:
        return f"holder unknown (note {note!r})"
    pid, host, user, since = match.groups()
    text = f"pid {pid} on host {host}, user {user}, since {since}"
    if host == socket.gethostname() and not _pid_running(int(pid)):
        # The holder could not write its own note (e.g. a lock file another user owns).
        text += " (stale note: that process has exited; the holder is another process)"
    return text


def _pid_running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


# --- config and environment -----------------------------------------------------


def _pool_from_config(value: Any) -> list[GpuId] | None:
    # `--config gpus=[0,1,2]` arrives as strings (YAML BaseLoader); a YAML
    # config file gives ints; a plain string "0,1,2" is accepted too.
    if value is None:
        return None
    if isinstance(value, str):
        return [_normalise_id(v) for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)):
        raise TypeError(f"config 'gpus' must be a list of GPU ids such as [0, 1, 2], got {value!r}")
    return [_normalise_id(v) for v in value]


def _slots_from_config(value: Any) -> int:
    # `--config gpu_slots_per_gpu=4` may arrive as the string "4".
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config 'gpu_slots_per_gpu' must be an integer >= 1 (jobs per GPU), "
                         f"got {value!r}")
    return value


def _timeout_from_config(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
        return None
    problem = f"config 'gpu_wait_timeout' must be seconds >= 0 or null (wait forever), got {value!r}"
    if isinstance(value, bool):
        raise ValueError(problem)
    try:
        seconds = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(problem) from exc
    if not seconds >= 0:  # also catches NaN
        raise ValueError(problem)
    return seconds


def _normalise_id(value: GpuId) -> GpuId:
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def _parse_visible_devices(value: str) -> list[GpuId]:
    """Parse ``CUDA_VISIBLE_DEVICES`` the way CUDA does.

    CUDA stops at the first invalid entry, so ``"-1"`` or ``""`` hide every
    GPU and ``"0,-1,1"`` exposes only 0.
    """
    ids: list[GpuId] = []
    for token in value.split(","):
        token = token.strip()
        if token.isdigit():
            ids.append(int(token))
        elif token.startswith(("GPU-", "MIG-")):
            ids.append(token)
        else:
            break
    return ids


def _resolve_pool(gpus: Sequence[GpuId] | None) -> list[GpuId]:
    """Pool order: ``gpus`` argument, else ``CUDA_VISIBLE_DEVICES``, else physical count.

    A GPU listed twice is one GPU (its slots are counted once).
    """
    if gpus is not None:
        return list(dict.fromkeys(_normalise_id(g) for g in gpus))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        # Set (even empty) means someone chose what CUDA may see: honour it.
        return list(dict.fromkeys(_parse_visible_devices(visible)))
    return list(range(_count_physical_gpus()))


def count_gpus(gpus: Sequence[GpuId] | None = None) -> int:
    """How many GPUs the jobs would share (the ``gpus`` config, else CUDA_VISIBLE_DEVICES, else all found)."""
    return len(_resolve_pool(gpus))


def _count_physical_gpus() -> int:
    """NVIDIA GPUs on this machine, counted without initialising CUDA."""
    try:
        return sum(1 for _ in _PROC_GPUS_DIR.iterdir())
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    # "GPU 0: NVIDIA H100 (UUID: ...)"; MIG lines are indented and not counted.
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _log_once(log: logging.Logger, key: str, msg: str, *args: object) -> None:
    if key not in _announced:
        _announced.add(key)
        log.info(msg, *args)


def _warn_if_cuda_started(log: logging.Logger) -> None:
    # Checks without importing torch: if the job already initialised CUDA,
    # CUDA_VISIBLE_DEVICES set now is ignored and the job may use any GPU.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        log.warning("CUDA was initialised before claim_gpus(): CUDA_VISIBLE_DEVICES "
                    "has no effect now; claim GPUs before touching CUDA")
