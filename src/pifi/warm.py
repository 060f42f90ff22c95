"""Warm start: jobs run in forks of a process that has already imported torch, transformers and pifi.

Every job is a fresh Python process, and a training job's imports (torch, transformers, the model's
modeling module) took 3-4 s on a 2-core VM and ~12 s on an H100 machine: as long as a short run's
training; the CPU-side jobs between the stages (tokenize, select, evaluate) paid seconds each on the
DAG's critical path. With ``warm_start: true`` the first job also starts a *warm server* in the
background: a process that imports those modules once, never touches CUDA, and waits on a Unix
socket. Later jobs hand themselves over. The job's own process (the *client*, the one Snakemake
started and watches) sends its script path, working directory, environment, ``sys.path`` and stdio
to the server; the server forks a *child* that runs the very same script there, and the client
waits and leaves with the child's exit status. A job that finds no server simply runs itself.

What stays true, whoever runs the script:
- The child claims its GPU slot itself, so the slot's flock lives exactly as long as the child.
- The client forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the child, and exits
  with the child's exit code, or dies of the child's signal.
- A client that dies, even by SIGKILL, takes its child with it: the server sees the client's
  connection close and SIGKILLs the child. A server that dies takes its children with it
  (``PR_SET_PDEATHSIG``); their clients then fail with a message saying so.
- The server serves only its own user (``SO_PEERCRED``), through a socket in a private 0700 dir,
  and only jobs with the interpreter, environment and installed code it was started with: these
  name its socket, so an edited ``pifi`` or an upgraded package starts a fresh server and never
  runs stale code. The thread counts Snakemake exports per rule are left out of the name (rules
  differ); ``pifi.job.start_job`` applies them to the loaded libraries in the child.
- A server with no job for ``warm_start_idle`` seconds exits. One that cannot start leaves a
  ``.failed`` marker beside its socket, and jobs run themselves for a while instead of each
  starting another.

Under SLURM every job runs in its own allocation and nothing outlives it: warm start steps aside.

This module is imported first by the scripts that use it, so it imports only the standard library.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import hashlib
import importlib
import json
import logging
import os
import re
import runpy
import selectors
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WARM_MODULES", "serve", "warm_start"]

WARM_MODULES = (
    # What the workflow scripts import, plus what Snakemake's script preamble does.
    "pandas", "pickle", "snakemake.iocontainers", "snakemake.logging",
    "transformers.models.auto.tokenization_auto",
    "pifi.artifacts", "pifi.choice", "pifi.data", "pifi.evaluation", "pifi.gpu", "pifi.hidden", "pifi.job",
    "pifi.model", "pifi.model_sources", "pifi.plots", "pifi.resume", "pifi.selection", "pifi.selectors",
    "pifi.summary", "pifi.tokens", "pifi.training",
)
"""Imported once by the server: the imports its children skip."""

DIR_ENV = "PIFI_WARM_DIR"
CHILD_ENV = "PIFI_WARM_CHILD"  # set in a child (to its server's pid): it and its subprocesses never hand over
DEFAULT_IDLE_SECONDS = 120.0
FAILED_RETRY_SECONDS = 600.0  # after a server failed to start, jobs run cold this long before one retries
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
# Set for every job anew, so they do not split servers: the thread counts Snakemake exports per rule
# (pifi.job.start_job applies them to the loaded libraries, in a child too) and the GPU the claim picks.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GOTO_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_VOLATILE_ENV = frozenset({*THREAD_ENV, "CUDA_VISIBLE_DEVICES", "_", "OLDPWD", "PWD", "SHLVL"})
_MAX_REQUEST_BYTES = 1 << 20
_HEADER = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1
_MODEL_TYPE = re.compile(r"[a-z0-9_-]+")

_log = logging.getLogger(__name__)
_child_request: dict[str, Any] | None = None  # set in a server's child: the request it runs
_server_lock_fd: int | None = None  # the server's flock: one server per socket; not for its children


class WarmUnavailable(RuntimeError):
    """Warm start cannot be used here (unsafe dir, path too long, ...): the job runs itself."""


# ---------------------------------------------------------------------------------------------
# The client: the job process Snakemake started


def warm_start(snakemake: Any, models: Iterable[str | None] = ()) -> float:
    """Run this job in a warm server's fork if one is up; return when the job was started.

    Called first thing in a script. In a plain process it returns the current time, after
    starting a server in the background for later jobs if none serves this environment. In a
    client that a server accepted it never returns: the process exits with the child's status.
    In that child (the same script, run again by the server) it returns the client's start time,
    so that start-up timings stay honest. ``models`` are the job's model manifests: the server
    imports their modeling modules too, once, before forking.
    """
    if _child_request is not None:
        return float(_child_request["started_at"])
    started_at = time.time()
    if not enabled(snakemake.config):
        return started_at
    try:
        socket_path = server_socket_path()
    except WarmUnavailable as exc:
        sys.stderr.write(f"pifi: warm start unavailable, running this job itself: {exc}\n")
        return started_at
    conn = _connect(socket_path)
    if conn is None:
        if _failed_recently(socket_path):
            return started_at
        _start_server(socket_path, idle=float(snakemake.config.get("warm_start_idle", DEFAULT_IDLE_SECONDS)))
        return started_at
    request = {
        "argv": list(sys.argv), "cwd": os.getcwd(), "env": dict(os.environ), "sys_path": list(sys.path),
        "started_at": started_at, "models": [os.path.abspath(m) for m in models if m],
    }
    child_pid = _send_request(conn, request)
    if child_pid is None:  # the server went away before it took the job: nothing ran yet
        conn.close()
        return started_at
    _wait_for_child(conn, child_pid)  # exits the process
    raise AssertionError("unreachable")


def enabled(config: Mapping[str, Any]) -> bool:
    """Whether this job may use warm start: asked for, on Linux, outside SLURM, not already a child."""
    return (bool(config.get("warm_start", False)) and sys.platform == "linux"
            and "SLURM_JOB_ID" not in os.environ and CHILD_ENV not in os.environ)


def server_socket_path() -> Path:
    """The socket of the server that serves exactly this process's interpreter, environment and code."""
    directory = private_dir()
    path = directory / f"{_environment_key()}.sock"
    if len(os.fsencode(path)) >= 100:  # sun_path holds 108 bytes
        raise WarmUnavailable(f"socket path {path} is too long for a Unix socket; set ${DIR_ENV} to a short dir")
    return path


def private_dir() -> Path:
    """``$PIFI_WARM_DIR`` or ``<runtime or tmp dir>/pifi-warm-<uid>``, created 0700 and checked."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(os.environ.get(DIR_ENV) or Path(base) / f"pifi-warm-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise WarmUnavailable(f"cannot create {path}: {exc}") from exc
    st = os.lstat(path)
    # Only a dir of ours that nobody else can enter: a socket there is reachable by us alone.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise WarmUnavailable(f"{path} is not a private directory of this user (a symlink, someone "
                              f"else's, or open to others); remove it or set ${DIR_ENV}")
    return path


def _environment_key() -> str:
    """A digest of everything a server's imports depend on: interpreter, environment, installed code.

    Not ``sys.path`` itself: Snakemake puts a per-invocation cache dir of the scripts on it, and the
    scripts are not what the server imports. The server imports installed packages and pifi.
    """
    digest = hashlib.sha256()
    env = sorted((k, v) for k, v in os.environ.items() if k not in _VOLATILE_ENV)
    digest.update(json.dumps([sys.executable, sys.version, env]).encode())
    # Installing, upgrading or removing a package changes its site dir's entries, so its mtime.
    for entry in _installation_dirs():
        digest.update(f"{entry}:{_mtime(entry)}".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):  # an editable pifi: its own sources
        st = source.stat()
        digest.update(f"{source.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _installation_dirs() -> list[str]:
    """The entries of ``sys.path`` that packages are installed into (those holding ``*.dist-info``)."""
    found = []
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as names:
                if any(name.name.endswith(".dist-info") for name in names):
                    found.append(os.path.abspath(entry))
        except OSError:  # a zip, a missing dir
            continue
    return found


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        conn.connect(os.fspath(path))
    except OSError:  # no server, or a stale socket a dead server left: start one
        conn.close()
        return None
    return conn


def _failed_recently(path: Path) -> bool:
    """Whether a server for this socket failed to start lately: then every job would start another."""
    marker = path.with_suffix(".failed")
    try:
        age = time.time() - os.stat(marker).st_mtime
    except OSError:
        return False
    if age > FAILED_RETRY_SECONDS:
        return False
    sys.stderr.write(f"pifi: warm start off for now: its server failed to start ({marker}); this job runs itself\n")
    return True


def _start_server(path: Path, idle: float) -> None:
    """Start a server for this environment in the background; this job does not wait for it."""
    log_path = path.with_suffix(".log")
    with open(log_path, "ab") as log_file:  # in the private dir
        subprocess.Popen(
            [sys.executable, "-m", "pifi.warm", os.fspath(path), json.dumps(sys.path), str(idle)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, cwd="/", close_fds=True,
            start_new_session=True,  # not in Snakemake's process group, and it outlives this job
        )


def _send_request(conn: socket.socket, request: dict[str, Any]) -> int | None:
    """Send the job to the server; the child's pid once it runs, None if the server did not take it."""
    body = json.dumps(request).encode()
    stdio = [fd for fd in (0, 1, 2) if _is_open(fd)]
    try:
        conn.sendall(_HEADER.pack(len(body)) + json.dumps({"stdio": stdio}).encode() + b"\n")
        socket.send_fds(conn, [b"F"], stdio)
        conn.sendall(body)
        reply = _read_reply(conn)
    except (OSError, ValueError):
        return None
    return int(reply["pid"]) if reply and "pid" in reply else None


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _wait_for_child(conn: socket.socket, child_pid: int) -> None:
    """Forward signals to the child until it ends; then leave as it did."""
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, lambda signum, _frame: _forward(child_pid, signum))
    try:
        reply = _read_reply(conn)
    except (OSError, ValueError):
        reply = None
    if reply is None or "exit" not in reply:
        sys.stderr.write(f"pifi: the warm server running this job (child pid {child_pid}) died; "
                         f"the job was killed with it. Set warm_start: false to run jobs on their own.\n")
        sys.stderr.flush()
        os._exit(1)
    _exit_like(int(reply["exit"]))


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _exit_like(code: int) -> None:
    """Exit with ``code``, as ``os.waitstatus_to_exitcode`` gave it: a negative code is a signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code  # the signal was blocked or ignored: the shell's convention
    os._exit(code)


def _read_reply(conn: socket.socket) -> dict[str, Any] | None:
    """The server's next JSON line, or None at EOF."""
    line = _read_line(conn)
    return None if line is None else json.loads(line)


def _read_line(conn: socket.socket) -> bytes | None:
    """One line, or None at EOF. Byte by byte, so that what follows it (the next message, or the
    stdio fds, which ride on the byte after the request's first line) stays queued for the next read."""
    data = b""
    while not data.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            return None
        if len(data) > 4096:
            raise ValueError("a line of over 4 KiB on the warm server's socket")
        data += byte
    return data


# ---------------------------------------------------------------------------------------------
# The server


def serve(socket_path: Path, sys_path: Sequence[str], idle: float = DEFAULT_IDLE_SECONDS,
          modules: Sequence[str] = WARM_MODULES) -> int:
    """Import ``modules``, then fork a child per job request until ``idle`` seconds pass without one."""
    sys.path[:] = sys_path
    # torch.cuda.is_available() asks NVML instead of starting the driver, should an import ask.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    lock_fd = os.open(socket_path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _log.info("another server already serves %s", socket_path)
        return 0
    global _server_lock_fd
    _server_lock_fd = lock_fd
    started = time.perf_counter()
    try:
        imported = _import_all(modules)
        _refuse_if_cuda_started()
        listener, inode = _listen(socket_path)
    except Exception as exc:
        # Jobs keep running cold; the marker stops each of them from starting a server that fails too.
        socket_path.with_suffix(".failed").write_text(f"{type(exc).__name__}: {exc}\n")
        raise
    socket_path.with_suffix(".failed").unlink(missing_ok=True)
    _log.info("warm server %d: imported %d modules in %.1f s; serving %s", os.getpid(), imported,
              time.perf_counter() - started, socket_path)
    try:
        _serve_forever(listener, idle)
    finally:
        _remove_if_ours(socket_path, inode)
        listener.close()
    _log.info("warm server %d: idle for %.0f s, exiting", os.getpid(), idle)
    return 0


def _import_all(modules: Sequence[str]) -> int:
    """Import what can be imported; a job that needs a module that failed here imports it itself."""
    imported = 0
    for name in modules:
        try:
            importlib.import_module(name)
            imported += 1
        except Exception as exc:  # noqa: BLE001 - one broken optional module must not cost every job its start
            _log.warning("not preloading %s: %s: %s", name, type(exc).__name__, exc)
    return imported


def _refuse_if_cuda_started() -> None:
    """A forked child cannot use a CUDA driver its parent initialised (``cuInit``): by torch's own start,
    or by any library that called into the driver while being imported."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised while importing the warm modules: a forked child could not use it")
    if _cuda_driver_initialised():
        raise RuntimeError("the CUDA driver was initialised (cuInit) while importing the warm modules: "
                           "a forked child could not use it")


def _cuda_driver_initialised(maps: Path = Path("/proc/self/maps")) -> bool:
    """Ask a CUDA driver this process already loaded whether it was initialised, without initialising it.

    Loading ``libcuda`` is harmless (torch's import may do it); ``cuInit`` is not. ``cuDeviceGetCount``
    answers CUDA_ERROR_NOT_INITIALIZED (3) before ``cuInit`` and CUDA_SUCCESS (0) after it.
    """
    try:
        mappings = [line.split(maxsplit=5) for line in maps.read_text().splitlines() if "/libcuda.so" in line]
    except OSError:  # no procfs: torch's own check in _refuse_if_cuda_started is all there is
        return False
    paths = {fields[5].strip() for fields in mappings if len(fields) == 6}  # the 6th field is the file
    for path in sorted(paths):
        try:
            driver = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # never loads it anew
            count = ctypes.c_int(0)
            if driver.cuDeviceGetCount(ctypes.byref(count)) == 0:
                return True
        except (OSError, AttributeError):
            continue
    return False


def _listen(path: Path) -> tuple[socket.socket, int]:
    """Bind under a temporary name, then rename: clients never reach a socket that does not accept yet.

    Returns the listener and the inode of its socket file, by which it knows its own file later.
    """
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    listener.bind(os.fspath(temporary))
    os.chmod(temporary, 0o600)
    listener.listen(64)
    inode = os.stat(temporary).st_ino
    os.rename(temporary, path)  # replaces a dead server's stale socket
    return listener, inode


def _remove_if_ours(path: Path, inode: int) -> None:
    """Remove the socket file, unless a newer server has already put its own there."""
    try:
        if os.stat(path).st_ino == inode:
            path.unlink()
    except OSError:
        pass


def _serve_forever(listener: socket.socket, idle: float) -> None:
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}  # child pid -> its client's connection
    last_busy = time.monotonic()
    while children or time.monotonic() - last_busy < idle:
        for key, _ in selector.select(timeout=0.2):
            if key.fileobj is listener:
                _accept(listener, selector, children)
            elif not _client_alive(key.fileobj):
                _kill_child_of(key.fileobj, children, selector)
        _reap(children, selector)
        if children:
            last_busy = time.monotonic()


def _accept(listener: socket.socket, selector: selectors.BaseSelector, children: dict[int, socket.socket]) -> None:
    try:
        conn, _ = listener.accept()
    except OSError as exc:  # e.g. out of fds: that client runs itself, the others keep their server
        _log.warning("accept failed: %s", exc)
        return
    stdio: dict[int, int] = {}
    try:
        conn.settimeout(10)  # a client that connects and says nothing must not stall the server
        _check_peer(conn)
        request, stdio = _read_request(conn)
        _preload_models(request.get("models", []))
        pid = os.fork()
        if pid == 0:
            _run_child(request, stdio, close=[conn, listener, *children.values()])
        conn.settimeout(None)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except Exception as exc:  # noqa: BLE001 - a bad request must not take the server down
        _log.warning("refused a request: %s", exc)
        conn.close()
        return
    finally:
        for fd in stdio.values():  # the child has its copies
            os.close(fd)
    children[pid] = conn
    selector.register(conn, selectors.EVENT_READ)
    _log.info("child %d runs %s", pid, request["argv"][:1])


def _check_peer(conn: socket.socket) -> None:
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if uid != os.getuid():
        raise PermissionError(f"process {pid} of uid {uid} is not this server's user")


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], dict[int, int]]:
    head = _recv_exact(conn, _HEADER.size)
    (length,) = _HEADER.unpack(head)
    if length > _MAX_REQUEST_BYTES:
        raise ValueError(f"request of {length} bytes")
    line = _read_line(conn)
    targets = json.loads(line or b"null")
    if not isinstance(targets, dict) or not set(targets.get("stdio", [None])) <= {0, 1, 2}:
        raise ValueError(f"malformed request: {line!r}")
    _msg, fds, _flags, _addr = socket.recv_fds(conn, 1, 3)
    if len(fds) != len(targets["stdio"]):
        for fd in fds:
            os.close(fd)
        raise ValueError(f"expected {len(targets['stdio'])} stdio fds, got {len(fds)}")
    stdio = dict(zip(targets["stdio"], fds))
    try:
        request = json.loads(_recv_exact(conn, length))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return request, stdio


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("request cut short")
        data += chunk
    return data


def _preload_models(manifests: Sequence[str]) -> None:
    """Import the modeling module of each manifest's model type (e.g. BERT's: 1.3 s) in the server."""
    for manifest in manifests:
        try:
            with open(manifest) as handle:
                meta = json.load(handle)
            model_type = meta["model_type"]
            if meta.get("trust_remote_code") or not _MODEL_TYPE.fullmatch(model_type):
                continue
            from transformers.models.auto.configuration_auto import model_type_to_module_name

            name = model_type_to_module_name(model_type)
            importlib.import_module(f"transformers.models.{name}.modeling_{name}")
        except Exception as exc:  # noqa: BLE001 - the child loads the model itself and reports real errors
            _log.info("not preloading the model of %s: %s", manifest, exc)
    _refuse_if_cuda_started()


def _client_alive(conn: socket.socket) -> bool:
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _kill_child_of(conn: socket.socket, children: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    selector.unregister(conn)
    for pid, client in children.items():
        if client is conn:
            _log.info("client of child %d is gone: killing the child", pid)
            _forward(pid, signal.SIGKILL)  # reaped, and the connection closed, by _reap


def _reap(children: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        _log.info("child %d exited with %d", pid, code)
        try:
            selector.unregister(conn)
        except KeyError:
            pass
        try:
            conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
        except OSError:
            pass
        conn.close()


# ---------------------------------------------------------------------------------------------
# The child: runs the job's script as the client would have


def _run_child(request: dict[str, Any], stdio: dict[int, int], close: Sequence[socket.socket]) -> None:
    """Become the job: its stdio, cwd, environment, argv and sys.path; run its script; never return."""
    try:
        server = os.getppid()
        _die_with_parent()
        if os.getppid() != server:  # the server died before the line above took effect
            os._exit(1)
        for sock in close:
            sock.close()
        if _server_lock_fd is not None:
            os.close(_server_lock_fd)
        atexit._clear()  # the server's exit handlers are the server's; run only the job's own
        _take_stdio(stdio)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[CHILD_ENV] = str(server)
        sys.argv[:] = request["argv"]
        sys.path[:] = request["sys_path"]
        global _child_request
        _child_request = request
        code = _run_script(request["argv"][0])
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the server
        try:
            sys.excepthook(*sys.exc_info())
        finally:
            os._exit(1)
    _exit_child(code)


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _take_stdio(stdio: Mapping[int, int]) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(stdio.get(target, null), target)
    for fd in {*stdio.values(), null}:
        if fd > 2:
            os.close(fd)
    # New text streams, buffered as Python buffers a job's own: the server's were made for its log file.
    sys.stdin = sys.__stdin__ = open(0, closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", closefd=False, buffering=1 if os.isatty(1) else -1)
    sys.stderr = sys.__stderr__ = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")


def _run_script(path: str) -> int:
    """Run the script as ``python path`` would and return its exit code; Ctrl-C ends it by SIGINT, as in Python."""
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        return _system_exit_code(exc.code)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # die of SIGINT, as Python does
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException:
        sys.excepthook(*sys.exc_info())
        return 1
    return 0


def _system_exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def _exit_child(code: int) -> None:
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
    finally:
        _flush()
        os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def main(argv: Sequence[str]) -> int:
    """``python -m pifi.warm SOCKET SYS_PATH_JSON IDLE``: what ``warm_start`` runs in the background."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    socket_path, sys_path, idle = Path(argv[0]), json.loads(argv[1]), float(argv[2])
    return serve(socket_path, sys_path, idle)


if __name__ == "__main__":
    # Through the imported module, not this __main__ copy of it: the children's scripts import
    # pifi.warm and must find the request that module holds.
    from pifi.warm import main as _main

    sys.exit(_main(sys.argv[1:]))
