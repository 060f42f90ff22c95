"""GPU slot pool: each GPU job claims its own GPU(s) when it starts.

Snakemake's local executor only *counts* the ``gpu`` resource
(``--resources gpu=3``); it never tells a job which GPU to use. So a job calls
:func:`claim_gpus` (or :func:`claim_gpus_for_job` from a ``script:``) before it
touches CUDA. The claim takes one lock file per GPU (``gpu<ID>.lock``) with a
non-blocking ``flock`` and sets ``CUDA_VISIBLE_DEVICES`` to the claimed ids.

The locks are held until the process exits; the kernel drops them even when
the job is SIGKILLed, so a dead job never leaves a stale slot. The pid and
hostname written into a lock file are for humans only: the flock is the truth.
The lock dir must be on a local file system (one pool per machine).

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
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["GpuId", "claim_gpus", "claim_gpus_for_job", "default_lock_dir", "release_gpus"]

GpuId = int | str
"""A CUDA device id: an index (``1``) or a UUID (``"GPU-8f3c..."``, ``"MIG-..."``)."""

LOCK_DIR_ENV = "PIFI_GPU_LOCK_DIR"
_PROC_GPUS_DIR = Path("/proc/driver/nvidia/gpus")
_log = logging.getLogger(__name__)

# Claimed GPU id -> open lock fd. Module-level so the fds (and their flocks)
# live exactly as long as the process.
_held: dict[GpuId, int] = {}
_held_by_thread: int | None = None
# "Say it once" flags, so a job calling claim_gpus twice does not log twice.
_announced: set[str] = set()


def default_lock_dir() -> Path:
    """``$PIFI_GPU_LOCK_DIR`` if set, else ``<tempdir>/pifi-gpu-locks``."""
    env = os.environ.get(LOCK_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "pifi-gpu-locks"


def claim_gpus(
    count: int,
    *,
    gpus: Sequence[GpuId] | None = None,
    lock_dir: str | os.PathLike[str] | None = None,
    poll_interval: float = 0.5,
    timeout: float | None = None,
    logger: logging.Logger | None = None,
) -> list[GpuId]:
    """Claim ``count`` GPUs for this process, all or none, and expose only them.

    Args:
        count: GPUs the job needs; ``<= 0`` means a CPU job (returns ``[]`` and
            changes nothing).
        gpus: the pool (config key ``gpus``), trusted as given. Default: the
            ids in ``CUDA_VISIBLE_DEVICES``, else ``0..n-1`` for the ``n``
            physical GPUs (counted without initialising CUDA).
        lock_dir: where the ``gpu<ID>.lock`` files live; default
            :func:`default_lock_dir`.
        poll_interval: seconds between tries while too few GPUs are free.
        timeout: give up after this many seconds (``None``: wait forever).
        logger: where to say which GPU was claimed; default this module's.

    Returns:
        The claimed ids, also written to ``CUDA_VISIBLE_DEVICES``. ``[]`` when
        the machine has no GPU (the job runs on CPU). Under SLURM: the ids
        SLURM exposed, nothing locked.

    Raises:
        ValueError: ``count`` exceeds the pool size (it could never succeed).
        RuntimeError: called again in this process with a different ``count``
            or from another thread (a second claim would wait on this process's
            own locks forever; and ``CUDA_VISIBLE_DEVICES`` is per process, so
            one process is one job: use ``script:``, not ``run:`` under
            ``--force-use-threads``).
        TimeoutError: ``timeout`` passed; the message names the busy GPUs.
    """
    log = logger or _log
    if count <= 0:
        return []
    global _held_by_thread
    if _held:
        # Same process, second call: hand back what it holds rather than
        # wait on its own locks (flocks on separate fds conflict in-process).
        # Another thread is another job sharing this process: refuse.
        if count == len(_held) and threading.get_ident() == _held_by_thread:
            return list(_held)
        raise RuntimeError(
            f"this process already holds GPU(s) {list(_held)}: cannot claim {count} "
            "again here or from another thread (one GPU job per process; "
            "call release_gpus() first)"
        )
    if "SLURM_JOB_ID" in os.environ:
        ids = _parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        _log_once(log, "slurm", "SLURM job %s: GPU pool steps aside, SLURM exposes GPU(s) %s",
                  os.environ["SLURM_JOB_ID"], ids)
        return ids

    pool = _resolve_pool(gpus)
    if not pool:
        _log_once(log, "cpu", "no GPU found: running on CPU")
        return []
    if count > len(pool):
        raise ValueError(f"job needs {count} GPU(s) but the pool has only {pool}")

    lock_path = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    _make_shared_dir(lock_path)
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting_said = False
    while True:
        taken, busy = _try_claim(pool, count, lock_path)
        if taken is not None:
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout:g} s waiting for {count} GPU(s) from pool {pool}: "
                f"busy GPUs {busy} (lock dir {lock_path}; holders: {_holders(lock_path, busy)})"
            )
        if not waiting_said:
            log.info("waiting for %d GPU(s): busy GPUs %s (pool %s, lock dir %s)",
                     count, busy, pool, lock_path)
            waiting_said = True
        time.sleep(poll_interval if deadline is None
                   else max(0.0, min(poll_interval, deadline - time.monotonic())))

    _held.update(taken)
    _held_by_thread = threading.get_ident()
    ids = list(taken)
    _warn_if_cuda_started(log)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in ids)
    log.info("claimed GPU %s (pool %s, lock dir %s)", ",".join(map(str, ids)), pool, lock_path)
    return ids


def claim_gpus_for_job(snakemake: Any, *, logger: logging.Logger | None = None,
                       timeout: float | None = None) -> list[GpuId]:
    """Claim the GPUs a Snakemake job declared (``resources: gpu=N``).

    Duck-typed on the ``snakemake`` object a ``script:`` receives: reads
    ``resources.get("gpu", 0)`` and the config keys ``gpus`` (pool) and
    ``gpu_lock_dir``. Call it before anything touches CUDA.
    """
    resources = getattr(snakemake, "resources", None)
    count = int((resources.get("gpu", 0) if resources is not None else 0) or 0)
    config: Mapping[str, Any] = getattr(snakemake, "config", None) or {}
    return claim_gpus(count, gpus=_pool_from_config(config.get("gpus")),
                      lock_dir=config.get("gpu_lock_dir"), timeout=timeout, logger=logger)


def release_gpus() -> None:
    """Drop this process's GPU locks (normally left to process exit).

    ``CUDA_VISIBLE_DEVICES`` is left as is: CUDA may already have read it.
    """
    while _held:
        _, fd = _held.popitem()
        os.close(fd)  # closing the only fd releases the flock


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
    """Pool order: ``gpus`` argument, else ``CUDA_VISIBLE_DEVICES``, else physical count."""
    if gpus is not None:
        return [_normalise_id(g) for g in gpus]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        # Set (even empty) means someone chose what CUDA may see: honour it.
        return _parse_visible_devices(visible)
    return list(range(_count_physical_gpus()))


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


def _try_claim(pool: list[GpuId], count: int,
               lock_dir: Path) -> tuple[dict[GpuId, int] | None, list[GpuId]]:
    """One all-or-none pass: the taken ``{id: fd}`` (or None) and the busy ids."""
    taken: dict[GpuId, int] = {}
    busy: list[GpuId] = []
    for gpu in pool:
        fd = _open_lock_file(lock_dir / _lock_name(gpu))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            busy.append(gpu)
            continue
        taken[gpu] = fd
        if len(taken) == count:
            break
    if len(taken) < count:
        # Never sit on a partial claim: two 2-GPU jobs holding one each would deadlock.
        for fd in taken.values():
            os.close(fd)
        return None, busy
    for fd in taken.values():
        _write_holder(fd)
    return taken, busy


def _lock_name(gpu: GpuId) -> str:
    return "gpu" + re.sub(r"[^A-Za-z0-9._-]", "_", str(gpu)) + ".lock"


def _make_shared_dir(path: Path) -> None:
    # World-writable + sticky like /tmp: every user's jobs share the pool, but
    # nobody can delete another user's lock file (which would split the lock).
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(path, 0o1777)
    except PermissionError:  # made by another user in a race: theirs to set
        pass


def _open_lock_file(path: Path) -> int:
    # Open an existing file without O_CREAT: Linux's fs.protected_regular
    # refuses O_CREAT on another user's file in a sticky world-writable dir.
    while True:
        try:
            return os.open(path, os.O_RDWR)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # another process created it just now
            continue
        os.fchmod(fd, 0o666)  # undo the umask so other users can lock it too
        return fd


def _write_holder(fd: int) -> None:
    # Informational only, for `cat gpu1.lock`; stale after a crash.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} host {socket.gethostname()}\n".encode(), 0)


def _holders(lock_dir: Path, busy: list[GpuId]) -> str:
    notes = []
    for gpu in busy:
        try:
            text = (lock_dir / _lock_name(gpu)).read_text().strip()
        except OSError:
            text = "?"
        notes.append(f"GPU {gpu}: {text or '?'}")
    return "; ".join(notes) or "none"


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
