"""A real single-node SLURM cluster (Debian's Slurm 22.05 + munge) for tests.

`slurm_cluster` (session-scoped fixture) installs the packages if missing, starts munge,
slurmctld and `slurmd -N localhost` from a slurm.conf in a private directory, waits until
the node is idle, yields a `SlurmCluster` and, at session end, stops only the daemons it
started. Where a cluster cannot start at all (not root, neither apt nor the binaries) the tests
skip, saying why; where it could start and does not (install, munge or daemons fail), they fail,
naming the failing command and its stderr, so a green run always means the cluster ran. Every
wait is bounded.

Where the config lives: clients get `SLURM_CONF` (in `SlurmCluster.env`), daemons get
`-f`. That is not enough on its own: inside a job, snakemake-executor-plugin-slurm-jobstep
strips every `SLURM_*` variable before its `srun`, so that nested srun only finds the
config at Slurm's default path. The helper therefore also links /etc/slurm/slurm.conf to
the private file (only if no other slurm.conf is there) and removes the link at teardown.

Job status: no accounting daemon. Snakemake runs with `--slurm-status-command squeue`,
and MinJobAge is an hour so that `squeue --states=all` still lists finished jobs, which
lets tests prove that their jobs ran through SLURM (`SlurmCluster.job_states`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
# The binaries those packages provide; install only when one is missing.
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "munged")
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_PIDFILE = Path("/run/munge/munged.pid")
NODE = "localhost"
# slurmctld's and slurmd's default ports; we keep them (see _check_ports_free).
PORTS = (6817, 6818)
# Finished jobs stay in squeue this long; the squeue status path needs >= 3x the
# plugin's --slurm-init-seconds-before-status-checks, tests need it to verify job states.
MIN_JOB_AGE_S = 3600


class ClusterUnavailable(Exception):
    """SLURM cannot run here; the message says why (becomes a pytest skip reason)."""


@dataclass
class SlurmCluster:
    """A running cluster: run client commands with `env` (it carries SLURM_CONF)."""

    root: Path
    conf: Path
    env: dict[str, str]
    # (name, pid file) of the daemons this helper started, in start order.
    started: list[tuple[str, Path]] = field(default_factory=list)
    linked_default_conf: bool = False

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def job_states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """State (COMPLETED, FAILED, ...) of each job id that slurmctld still knows."""
        if not job_ids:
            return {}
        res = self.run(
            "squeue", "--states=all", "--noheader", "--format=%i|%T",
            "--jobs", ",".join(job_ids),
        )
        states = {}
        for line in res.stdout.splitlines():
            job_id, _, state = line.strip().partition("|")
            states[job_id] = state
        return states

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for log in sorted((self.root / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log}\n" + "\n".join(text))
        return "\n".join(out)


def _run(cmd: Sequence[str], timeout: float, **kw) -> subprocess.CompletedProcess[str]:
    """Run a setup command; any failure or timeout means the cluster is unavailable."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterUnavailable(f"`{' '.join(cmd)}` failed: {exc}") from exc
    if res.returncode != 0:
        raise ClusterUnavailable(
            f"`{' '.join(cmd)}` exited {res.returncode}: {res.stderr.strip()[-2000:]}"
        )
    return res


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 (after the parenthesised name) is the state; Z = exited, not reaped.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _wait_for(what: str, check, timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise ClusterUnavailable(f"timed out after {timeout:.0f} s waiting for {what}")


def missing_prerequisite() -> str | None:
    """Why a cluster cannot start on this machine at all (not root, no way to get the packages)."""
    if os.geteuid() != 0:
        return "not root (slurmd and munged need it)"
    if not shutil.which("apt-get") and not all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES):
        return "no apt-get and no Slurm binaries"
    return None


def install_packages() -> None:
    """apt-get install the Slurm/munge packages unless their binaries are all there."""
    if all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES):
        return
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("no apt-get: cannot install " + " ".join(PACKAGES))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for a concurrent apt/dpkg run instead of failing on its lock.
    lock_wait = ["-o", "DPkg::Lock::Timeout=120"]
    install = ["apt-get", *lock_wait, "install", "-y", "--no-install-recommends", *PACKAGES]
    try:
        _run(install, timeout=900, env=env)
    except ClusterUnavailable:
        # Stale or missing package lists (fresh machines): refresh once and retry.
        _run(["apt-get", *lock_wait, "update"], timeout=600, env=env)
        _run(install, timeout=900, env=env)


def _munge_works() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        check = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return check.returncode == 0


def start_munge() -> bool:
    """Start munged unless one already answers; True if this call started it."""
    if _munge_works():
        return False
    if not Path("/etc/munge/munge.key").exists():
        # The package's postinst normally creates the key.
        _run(["runuser", "-u", "munge", "--", "mungekey", "--create"], timeout=30)
    _run(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", "/run/munge"], timeout=10)
    _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], timeout=30)
    _wait_for("munged to answer `munge -n | unmunge`", _munge_works, timeout=20)
    return True


def _check_ports_free() -> None:
    """A second slurmctld/slurmd on this host would fail to bind; say so up front."""
    for port in PORTS:
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise ClusterUnavailable(
                    f"port {port} is in use (another slurmctld/slurmd running? "
                    f"see `ss -ltnp 'sport = :{port}'`); stop it first"
                )


def _total_mem_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterUnavailable("cannot read MemTotal from /proc/meminfo")


def write_conf(root: Path) -> Path:
    """slurm.conf for one node named localhost with all CPUs, memory minus 1 GiB."""
    for sub in ("state", "spool", "log", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "# Written by tests/slurm_cluster.py: a throwaway single-node test cluster.",
                "ClusterName=local",
                "SlurmctldHost=localhost",
                "SlurmUser=root",
                "AuthType=auth/munge",
                # No cgroups on this machine: plain /proc process tracking, no task binding.
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                # Without it one job is given all memory and jobs run one at a time.
                "DefMemPerCPU=500",
                "MailProg=/bin/true",
                "ReturnToService=2",
                f"MinJobAge={MIN_JOB_AGE_S}",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                f"NodeName={NODE} CPUs={os.cpu_count() or 1} "
                f"RealMemory={max(_total_mem_mib() - 1024, 512)} State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    return conf


def _link_default_conf(conf: Path) -> bool:
    """Point /etc/slurm/slurm.conf at `conf` for the in-job srun; True if linked."""
    if DEFAULT_CONF.is_symlink():
        target = Path(os.readlink(DEFAULT_CONF))
        # A dangling link left by an earlier, killed session of this helper.
        if target.name == "slurm.conf" and not target.exists():
            DEFAULT_CONF.unlink()
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        raise ClusterUnavailable(
            f"{DEFAULT_CONF} already exists ({os.path.realpath(DEFAULT_CONF)}): this host "
            "has its own Slurm config; not overriding it"
        )
    DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
    DEFAULT_CONF.symlink_to(conf)
    return True


def _node_state(cluster: SlurmCluster) -> str:
    try:
        res = cluster.run("sinfo", "-h", "-n", NODE, "-o", "%T", timeout=10)
    except subprocess.TimeoutExpired:
        return "timeout"
    return res.stdout.strip()


def _stop_pid(name: str, pid: int, timeout: float = 20) -> None:
    """SIGTERM, wait, SIGKILL if needed; wait for the process to be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if _pid_alive(pid):
        raise RuntimeError(f"{name} (pid {pid}) did not exit")


def stop_cluster(cluster: SlurmCluster) -> None:
    """Cancel leftover jobs, stop the daemons this helper started (slurmd, slurmctld,
    munged), remove the /etc link. Tries every step even when one fails."""
    errors: list[str] = []
    names = {name for name, _ in cluster.started}
    if "slurmctld" in names:
        # Jobs run in slurmstepd processes that outlive slurmd: cancel them first.
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            cluster.run("scancel", "--user", "root", timeout=10)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                res = cluster.run("squeue", "--noheader", "--format=%i", timeout=10)
                if res.returncode != 0 or not res.stdout.strip():
                    break
                time.sleep(0.5)
    for name, pidfile in reversed(cluster.started):
        pid = _read_pid(pidfile)
        if pid is None:
            errors.append(f"{name}: no pid in {pidfile}")
            continue
        try:
            _stop_pid(name, pid)
        except RuntimeError as exc:
            errors.append(str(exc))
    cluster.started.clear()
    if cluster.linked_default_conf and DEFAULT_CONF.is_symlink():
        if Path(os.readlink(DEFAULT_CONF)) == cluster.conf:
            DEFAULT_CONF.unlink()
        cluster.linked_default_conf = False
    if errors:
        raise RuntimeError("SLURM teardown: " + "; ".join(errors))


def start_cluster(root: Path, timeout: float = 60) -> SlurmCluster:
    """Install if needed, start munge + slurmctld + slurmd, wait for an idle node.

    On failure, stops what it had started and raises ClusterUnavailable.
    """
    if os.geteuid() != 0:
        raise ClusterUnavailable("needs root (apt-get, munged, slurmd)")
    install_packages()
    conf = write_conf(root)
    cluster = SlurmCluster(root=root, conf=conf, env={**os.environ, "SLURM_CONF": str(conf)})
    try:
        if start_munge():
            cluster.started.append(("munged", MUNGE_PIDFILE))
        _check_ports_free()
        cluster.linked_default_conf = _link_default_conf(conf)
        for name, args in (
            ("slurmctld", ["/usr/sbin/slurmctld", "-f", str(conf)]),
            ("slurmd", ["/usr/sbin/slurmd", "-f", str(conf), "-N", NODE]),
        ):
            pidfile = root / "run" / f"{name}.pid"
            # Both daemonize: the call returns once the daemon has forked.
            _run(args, timeout=30, env=cluster.env)
            cluster.started.append((name, pidfile))
            _wait_for(
                f"{name} pid file {pidfile}",
                lambda p=pidfile: (pid := _read_pid(p)) is not None and _pid_alive(pid),
                timeout=15,
            )
        _wait_for(
            f"`sinfo -h -n {NODE} -o %T` to print idle",
            lambda: _node_state(cluster) == "idle",
            timeout=timeout,
        )
    except BaseException as exc:
        logs = cluster.log_tail()
        with contextlib.suppress(RuntimeError):
            stop_cluster(cluster)
        if isinstance(exc, ClusterUnavailable) and logs:
            raise ClusterUnavailable(f"{exc}\n{logs}") from exc
        raise
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running single-node cluster for the whole session; skips where impossible."""
    root = tmp_path_factory.mktemp("slurm")
    if (missing := missing_prerequisite()) is not None:
        pytest.skip(f"no SLURM cluster can start here: {missing}")
    try:
        cluster = start_cluster(root)
    except ClusterUnavailable as exc:
        # Root and packages are there: a cluster that could start and did not is a failure, not a skip.
        pytest.fail(f"SLURM cluster did not start: {exc}")
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
