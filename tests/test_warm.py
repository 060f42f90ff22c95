"""Warm start (pifi.warm): jobs handed to a server that has the imports done, with every guarantee kept.

The job script below stands in for a workflow script: it calls warm_start first, then reports
where it runs. The first run finds no server and starts one; later runs are forks of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gpu_pool_helpers import claim_in_fresh_process, clean_env, wait_for_file
from pifi import warm

JOB = """
import json, os, signal, sys, time, types
from pifi.warm import warm_start

snakemake = types.SimpleNamespace(config={"warm_start": True, "warm_start_idle": 60})
started_at = warm_start(snakemake)
mode, out = sys.argv[1], sys.argv[2]
report = {"pid": os.getpid(), "server": os.environ.get("PIFI_WARM_CHILD"), "cwd": os.getcwd(),
          "argv": sys.argv[1:], "started_at": started_at, "torch_imported": "torch" in sys.modules,
          "marker": os.environ.get("JOB_MARKER"), "stdin": sys.stdin.read() if mode == "stdin" else None}
if mode == "hold":  # hold a GPU slot as a training job does, until killed
    from pifi.gpu import claim_gpus, claimed_slots
    claim_gpus(1, gpus=[0], lock_dir=sys.argv[3], poll_interval=0.05, timeout=5)
    report["slots"] = claimed_slots()
with open(out + ".tmp", "w") as handle:
    json.dump(report, handle)
os.rename(out + ".tmp", out)
print("stdout of the job", flush=True)
print("stderr of the job", file=sys.stderr, flush=True)
if mode == "exit":
    sys.exit(int(sys.argv[3]))
if mode == "raise":
    raise RuntimeError("boom in the job")
if mode == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
if mode == "hold":
    time.sleep(120)
"""


def _warm_env(warm_dir: Path) -> dict[str, str]:
    env = clean_env()
    env[warm.DIR_ENV] = str(warm_dir)
    env.pop(warm.CHILD_ENV, None)
    return env


def _socket(warm_dir: Path) -> Path:
    sockets = list(warm_dir.glob("*.sock"))
    assert len(sockets) == 1, sockets
    return sockets[0]


def _server_pid(warm_dir: Path) -> int:
    log = next(warm_dir.glob("*.log")).read_text()
    return int(log.split("warm server ", 1)[1].split(":", 1)[0])


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class Jobs:
    """Runs the job script with one environment, so every run maps to the same server."""

    def __init__(self, root: Path, warm_dir: Path):
        self.root, self.env = root, _warm_env(warm_dir)
        self.script = root / "job.py"
        self.script.write_text(JOB)
        self.count = 0

    def args(self, mode: str, *extra: str) -> tuple[list[str], Path]:
        self.count += 1
        out = self.root / f"report{self.count}.json"
        return [sys.executable, str(self.script), mode, str(out), *extra], out

    def run(self, mode: str, *extra: str, cwd: Path | None = None, stdin: str = "") -> tuple[subprocess.CompletedProcess, dict]:
        cmd, out = self.args(mode, *extra)
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=self.env, cwd=cwd or self.root,
                              timeout=120)
        return proc, json.loads(out.read_text())

    def start(self, mode: str, *extra: str) -> tuple[subprocess.Popen, Path]:
        cmd, out = self.args(mode, *extra)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
                                cwd=self.root)
        return proc, out


def _served(root: Path) -> tuple[Jobs, Path]:
    """A job runner whose first (cold) run started a server, once that server accepts jobs."""
    warm_dir = Path(tempfile.mkdtemp(prefix="pw", dir="/tmp"))  # short: a socket path holds < 108 bytes
    jobs = Jobs(root, warm_dir)
    cold, report = jobs.run("exit", "0")
    assert cold.returncode == 0, cold.stderr
    assert report["server"] is None and not report["torch_imported"]  # ran itself
    deadline = time.monotonic() + 120
    while not list(warm_dir.glob("*.sock")):
        assert time.monotonic() < deadline, "the warm server never came up: " + "".join(
            p.read_text() for p in warm_dir.glob("*.log"))
        time.sleep(0.2)
    return jobs, warm_dir


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    jobs, warm_dir = _served(tmp_path_factory.mktemp("warm"))
    yield jobs, warm_dir
    _stop_server(warm_dir)


def _stop_server(warm_dir: Path) -> None:
    try:
        os.kill(_server_pid(warm_dir), signal.SIGTERM)
    except (ProcessLookupError, StopIteration, IndexError):
        pass


def test_a_handed_over_job_runs_in_a_fork_with_the_clients_cwd_argv_env_and_stdio(served, tmp_path):
    jobs, warm_dir = served
    proc, report = jobs.run("stdin", cwd=tmp_path, stdin="input of the job")
    assert proc.returncode == 0, proc.stderr
    assert report["server"] == str(_server_pid(warm_dir))
    assert report["torch_imported"]  # inherited from the server: the job imported nothing itself
    assert report["cwd"] == str(tmp_path)
    assert report["argv"][0] == "stdin"
    assert report["stdin"] == "input of the job"
    assert proc.stdout == "stdout of the job\n"
    assert proc.stderr == "stderr of the job\n"
    assert report["started_at"] <= time.time()  # the client's start, not the fork's


def test_the_client_leaves_with_the_childs_exit_code(served):
    jobs, _ = served
    proc, report = jobs.run("exit", "3")
    assert report["server"] is not None
    assert proc.returncode == 3


def test_an_error_in_the_job_reaches_the_clients_stderr_and_exit_code(served):
    jobs, _ = served
    proc, report = jobs.run("raise")
    assert report["server"] is not None
    assert proc.returncode == 1
    assert "RuntimeError: boom in the job" in proc.stderr


def test_a_child_killed_by_a_signal_makes_the_client_die_of_it(served):
    jobs, _ = served
    proc, report = jobs.run("sigterm")
    assert report["server"] is not None
    assert proc.returncode == -signal.SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT (Ctrl-C)"])
def test_a_signal_to_the_client_reaches_the_child(served, tmp_path, sig):
    jobs, _ = served
    client, out = jobs.start("hold", str(tmp_path / "locks"))
    try:
        wait_for_file(out, timeout=60)
        child = json.loads(out.read_text())["pid"]
        client.send_signal(sig)
        assert client.wait(timeout=30) == -sig  # the child died of it, and so did the client
        assert _gone(child, timeout=10)
        if sig == signal.SIGINT:
            assert "KeyboardInterrupt" in client.stderr.read()  # the job's traceback, as Python prints it
    finally:
        client.kill()
        client.wait()


def test_a_sigkilled_client_takes_its_child_and_gpu_slot_with_it(served, tmp_path):
    jobs, _ = served
    lock_dir = tmp_path / "locks"
    client, out = jobs.start("hold", str(lock_dir))
    try:
        wait_for_file(out, timeout=60)
        report = json.loads(out.read_text())
        assert report["server"] is not None and report["pid"] != client.pid
        busy = claim_in_fresh_process(lock_dir, [0], timeout=0.3)
        assert busy.returncode != 0  # the child holds the slot
        client.kill()  # SIGKILL: the client cannot tell anyone
        client.wait()
        assert _gone(report["pid"], timeout=10), "the child outlived its client"
        freed = claim_in_fresh_process(lock_dir, [0], timeout=5)
        assert freed.returncode == 0, freed.stderr
    finally:
        client.kill()
        client.wait()


def test_a_dead_server_takes_its_children_with_it_and_their_clients_say_so(tmp_path):
    jobs, warm_dir = _served(tmp_path)
    client, out = jobs.start("hold", str(tmp_path / "locks"))
    try:
        wait_for_file(out, timeout=60)
        child = json.loads(out.read_text())["pid"]
        os.kill(_server_pid(warm_dir), signal.SIGKILL)
        assert client.wait(timeout=30) == 1
        assert _gone(child, timeout=10), "the child outlived its server"
        assert "warm server running this job" in client.stderr.read()  # EOF once the child is gone too
    finally:
        client.kill()
        client.wait()
        _stop_server(warm_dir)


SERVE = ("import sys, json; from pathlib import Path; from pifi.warm import serve; "
         "sys.exit(serve(Path(sys.argv[1]), sys.path, float(sys.argv[3]), modules=json.loads(sys.argv[2])))")


def test_an_idle_server_exits_and_removes_its_socket(tmp_path):
    socket_path = Path(tempfile.mkdtemp(prefix="pw", dir="/tmp")) / "idle.sock"
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(socket_path), "[]", "0.5"], env=clean_env())
    try:
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
    assert not socket_path.exists()


def test_a_module_that_fails_to_import_does_not_stop_the_server(tmp_path):
    socket_path = Path(tempfile.mkdtemp(prefix="pw", dir="/tmp")) / "partial.sock"
    server = subprocess.run([sys.executable, "-c", SERVE, str(socket_path), '["json", "no_such_module_here"]', "0.5"],
                            env=clean_env(), capture_output=True, text=True, timeout=60)
    assert server.returncode == 0, server.stderr
    assert "not preloading no_such_module_here" in server.stderr
    assert not socket_path.with_suffix(".failed").exists()


def test_a_server_that_cannot_start_stops_jobs_from_starting_more_for_a_while(tmp_path, capsys):
    socket_path = Path(tempfile.mkdtemp(prefix="pw", dir="/tmp")) / "broken.sock"
    (socket_path / "in-the-way").mkdir(parents=True)  # a non-empty dir where the socket must go
    server = subprocess.run([sys.executable, "-c", SERVE, str(socket_path), "[]", "0.5"],
                            env=clean_env(), capture_output=True, text=True, timeout=60)
    assert server.returncode != 0
    marker = socket_path.with_suffix(".failed")
    assert marker.exists() and "Error" in marker.read_text()
    assert warm._failed_recently(socket_path)  # so warm_start runs the job itself, starting nothing
    assert "its server failed to start" in capsys.readouterr().err
    stale = time.time() - warm.FAILED_RETRY_SECONDS - 1
    os.utime(marker, (stale, stale))
    assert not warm._failed_recently(socket_path)  # later, one job tries again


FAKE_DRIVER = """
static int initialised = 0;
int cuInit(unsigned int flags) { initialised = 1; return 0; }
int cuDeviceGetCount(int *count) { if (!initialised) return 3; *count = 1; return 0; }
"""
DRIVER_PROBE = """
import ctypes, sys
from pifi import warm
loaded = warm._cuda_driver_initialised()   # not loaded at all
driver = ctypes.CDLL(sys.argv[1])          # loaded, as an import may do: harmless
before = warm._cuda_driver_initialised()
driver.cuInit(0)                           # initialised: a fork could not use it
after = warm._cuda_driver_initialised()
try:
    warm._refuse_if_cuda_started()
    refused = ""
except RuntimeError as exc:
    refused = str(exc)
print(loaded, before, after, "cuInit" in refused)
"""


def test_a_server_whose_imports_initialised_the_cuda_driver_refuses_to_serve(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a stand-in CUDA driver")
    (tmp_path / "driver.c").write_text(FAKE_DRIVER)
    library = tmp_path / "libcuda.so.1"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(tmp_path / "driver.c")], check=True)
    probe = subprocess.run([sys.executable, "-c", DRIVER_PROBE, str(library)], env=clean_env(),
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["False", "False", "True", "True"]


def test_a_second_server_for_the_same_socket_steps_aside(tmp_path):
    socket_path = Path(tempfile.mkdtemp(prefix="pw", dir="/tmp")) / "one.sock"
    first = subprocess.Popen([sys.executable, "-c", SERVE, str(socket_path), "[]", "5"], env=clean_env())
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-c", SERVE, str(socket_path), "[]", "5"], env=clean_env(),
                                timeout=30, capture_output=True, text=True)
        assert second.returncode == 0, second.stderr  # returned at once: the lock is taken
        assert first.poll() is None  # the first one still serves
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(str(socket_path))
        conn.close()
    finally:
        first.kill()
        first.wait()


# -- choosing a server ------------------------------------------------------------------------


def test_warm_start_is_off_unless_asked_and_under_slurm_or_in_a_child(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv(warm.CHILD_ENV, raising=False)
    assert warm.enabled({"warm_start": True})
    assert not warm.enabled({"warm_start": False}) and not warm.enabled({})
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert not warm.enabled({"warm_start": True})
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv(warm.CHILD_ENV, "123")
    assert not warm.enabled({"warm_start": True})


def test_a_job_that_may_not_warm_start_runs_itself(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    before = time.time()
    assert before <= warm.warm_start(SimpleNamespace(config={"warm_start": True})) <= time.time()


def test_the_environment_names_the_server_but_per_job_variables_do_not(monkeypatch, tmp_path):
    monkeypatch.setenv(warm.DIR_ENV, str(tmp_path))
    base = warm.server_socket_path()
    for name in warm.THREAD_ENV:  # Snakemake exports the rule's threads: rules differ
        monkeypatch.setenv(name, "7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert warm.server_socket_path() == base
    monkeypatch.setenv("HF_HUB_OFFLINE", "0" if os.environ.get("HF_HUB_OFFLINE") == "1" else "1")  # read at import
    assert warm.server_socket_path() != base


def test_snakemakes_per_run_script_dirs_do_not_split_servers_but_an_installed_package_does(monkeypatch, tmp_path):
    monkeypatch.setenv(warm.DIR_ENV, str(tmp_path / "warm"))
    base = warm.server_socket_path()
    scripts = tmp_path / "snakemake-runtime-cache" / "tmpabc"  # on sys.path, new per invocation
    scripts.mkdir(parents=True)
    (scripts / "train.py").write_text("")
    monkeypatch.syspath_prepend(str(scripts))
    assert warm.server_socket_path() == base
    site = tmp_path / "site"
    (site / "some_package-1.0.dist-info").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(site))
    with_site = warm.server_socket_path()
    assert with_site != base
    os.utime(site, ns=(0, 10**18))  # what an install, upgrade or removal there does
    assert warm.server_socket_path() != with_site


def test_an_edited_pifi_module_names_a_new_server(monkeypatch, tmp_path):
    monkeypatch.setenv(warm.DIR_ENV, str(tmp_path))
    base = warm.server_socket_path()
    source = Path(warm.__file__)
    stat = source.stat()
    try:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert warm.server_socket_path() != base
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("problem", ["open to others", "symlink", "not a dir"])
def test_an_unsafe_warm_dir_is_refused(monkeypatch, tmp_path, problem):
    path = tmp_path / "warm"
    if problem == "open to others":
        path.mkdir(mode=0o755)
        path.chmod(0o755)
    elif problem == "symlink":
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        path.symlink_to(private)
    else:
        path.write_text("")
    monkeypatch.setenv(warm.DIR_ENV, str(path))
    with pytest.raises(warm.WarmUnavailable, match="not a private directory"):
        warm.private_dir()


def test_a_missing_warm_dir_is_made_private(monkeypatch, tmp_path):
    monkeypatch.setenv(warm.DIR_ENV, str(tmp_path / "new"))
    path = warm.private_dir()
    assert path.is_dir() and path.stat().st_mode & 0o777 == 0o700


def test_a_socket_path_too_long_for_unix_sockets_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv(warm.DIR_ENV, str(tmp_path / ("x" * 100)))
    with pytest.raises(warm.WarmUnavailable, match="too long"):
        warm.server_socket_path()


def test_every_workflow_script_offers_itself_to_a_warm_server_before_its_imports():
    """The hand-over only saves what comes after it: it must be a script's first statement."""
    import ast

    scripts = sorted((Path(__file__).parents[1] / "workflow" / "scripts").glob("*.py"))
    assert len(scripts) >= 10
    for script in scripts:
        body = ast.parse(script.read_text()).body
        statements = body[1:] if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body
        first, second = statements[0], statements[1]
        assert ast.unparse(first) == "from pifi.warm import warm_start", script.name
        call = second.value if isinstance(second, (ast.Expr, ast.Assign)) else None
        assert isinstance(call, ast.Call) and ast.unparse(call.func) == "warm_start", script.name
