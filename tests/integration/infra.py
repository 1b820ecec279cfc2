"""Real infrastructure for the launch tests: a single-node Slurm, OpenMPI and pdsh over a loopback sshd.

Nothing here imports medtune. The fixtures are registered for tests/integration in its
conftest.py (register them once, there: importing a session fixture into several test
modules would start one Slurm per module).

``slurm_cluster`` (session)
    A real Slurm (Debian's slurmctld + slurmd + munge), started as root in a temp state
    directory under /tmp, with free ports and a private munged, so it never touches
    /etc/slurm, /etc/munge or another session's cluster. Yields a :class:`SlurmCluster`::

        job = slurm_cluster.submit(script)            # sbatch --parsable; returns the job id
        slurm_cluster.wait_state(job, "RUNNING")       # or a tuple of states
        slurm_cluster.signal_batch(job, "USR1")        # scancel --signal=USR1 --batch
        slurm_cluster.release(job)                     # scontrol update JobId=N StartTime=now
        slurm_cluster.stdout_path(job).read_text()
        subprocess.run([...], env=slurm_cluster.environ())   # SLURM_CONF for sbatch/srun/...

``openmpi`` (session)
    Skips unless ``mpirun`` exists. Tests call ``openmpi.command(2, python, ...)``, i.e.
    ``mpirun --allow-run-as-root --oversubscribe -np 2 ...``, with ``env=openmpi.environ()``.

``loopback_sshd`` (session)
    An sshd on a free 127.0.0.1 port with a throw-away host key and a client key
    authorised for root; ``node-a`` and ``node-b`` both reach it. ``loopback_sshd.env`` makes
    ``pdsh -R ssh -w node-a,node-b CMD`` and DeepSpeed's pdsh runner (``pdsh -S -f 1024 -w
    hosts ...``, plus its plain ``ssh HOST hostname`` reachability check) work:
    ``PDSH_RCMD_TYPE=ssh``, ``PDSH_SSH_ARGS_APPEND="-F <ssh_config>"`` and ``PATH`` led by a
    directory whose ``ssh`` is ``/usr/bin/ssh -F <ssh_config> "$@"``.

Every daemon is started in the foreground as a child of the test process and stopped on
teardown. State directories are named ``/tmp/medtune-infra-*`` and record their owner's pid;
a later session removes (and stops the daemons of) those whose owner is gone, so a crashed
run leaves nothing that breaks the next one. Set ``MEDTUNE_KEEP_INFRA=1`` to keep the
directories (logs included) after teardown.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pytest

PREFIX = "medtune-infra-"
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
INSTALL_HINT = ".ci/run installs them (as root, on Debian)"
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL",
                             "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED"})

# -------------------------------------------------------------------------------- helpers


def is_root() -> bool:
    return os.geteuid() == 0


def which(name: str) -> str | None:
    """`name` on PATH or in the sbin directories (daemons live in /usr/sbin)."""
    return shutil.which(name, path=SBIN_PATH)


def missing(*names: str) -> list[str]:
    return [n for n in names if which(n) is None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_hostname() -> str:
    """What `hostname -s` prints: Slurm's NodeName must match the name slurmd finds."""
    return socket.gethostname().split(".")[0]


def skip_unless_root_with(*binaries: str, what: str) -> None:
    if not is_root():
        pytest.skip(f"{what} needs root (it starts system daemons); running as uid {os.geteuid()}")
    gone = missing(*binaries)
    if gone:
        pytest.skip(f"{what} needs {', '.join(gone)}; {INSTALL_HINT}")


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks since boot


def _pids_referencing(marker: str) -> list[int]:
    """Processes whose command line or environment mentions `marker` (our state dir)."""
    found, needle = [], marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if needle in (entry / part).read_bytes():
                    found.append(int(entry.name))
                    break
            except OSError:
                pass
    return found


def _kill_pids(pids: Iterable[int], grace: float = 5.0) -> None:
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = Path(f"/proc/{pid}/stat")
    try:  # a zombie child of ours counts as gone
        return st.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def make_state_dir(kind: str) -> Path:
    """A fresh /tmp/medtune-infra-KIND-XXXX (mode 0755: munged's user must traverse it),
    after cleaning up the leftovers of sessions that died without their teardown."""
    reap_stale_state_dirs()
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-", dir="/tmp"))
    root.chmod(0o755)
    (root / "owner").write_text(f"{os.getpid()} {_proc_start_time(os.getpid())}\n")
    return root


def reap_stale_state_dirs() -> None:
    """Stop the daemons of, and remove, /tmp/medtune-infra-* dirs whose owner process is gone.
    Directories of live sessions (another engineer's `make test`) are left alone."""
    for d in Path("/tmp").glob(f"{PREFIX}*"):
        try:
            pid, start = (d / "owner").read_text().split()
        except (OSError, ValueError):
            if time.time() - d.stat().st_mtime < 60:
                continue  # being created right now
            pid, start = "0", ""
        if pid.isdigit() and int(pid) > 0 and _proc_start_time(int(pid)) == start:
            continue
        _kill_pids(_pids_referencing(str(d)))
        shutil.rmtree(d, ignore_errors=True)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return f"({path}: {e})"


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{_tail(self.log)}")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_daemon(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 **popen) -> Daemon:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, **popen)
    return Daemon(name, proc, log)


def wait_for(predicate, timeout: float, what: str, daemons: Iterable[Daemon] = (),
             poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        for d in daemons:
            d.check_alive()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {d.name} ({d.log}):\n{_tail(d.log)}" for d in daemons)
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        time.sleep(poll)


# -------------------------------------------------------------------------------- Slurm


SLURM_CONF = """\
# written by tests/integration/infra.py: a single-node Slurm for the launch tests
ClusterName=medtune
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket={munge_socket}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# requeue: `--requeue` jobs and `scontrol requeue` may put a job back in the queue
JobRequeue=1
ReturnToService=2
# the node's CPUs/memory below are taken as given, even where the machine reports fewer
SlurmdParameters=config_overrides
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
# finished jobs stay visible to `scontrol show job` for an hour (there is no sacct)
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _parse_scontrol(line: str) -> dict[str, str]:
    return dict(re.findall(r"(?:^|\s)([A-Za-z][\w/:]*)=(\S*)", line))


@dataclass
class SlurmCluster:
    """A running single-node Slurm. All commands need ``env`` (``SLURM_CONF``)."""

    root: Path          # temp state directory (logs in root/log, default job output in root/jobs)
    conf_path: Path     # slurm.conf
    node: str           # NodeName == `hostname -s`
    partition: str      # the one (default) partition
    cpus: int
    env: dict[str, str]  # {"SLURM_CONF": str(conf_path)}: add it to every Slurm command's env
    jobs_dir: Path      # where submit() sends a job's stdout unless told otherwise
    daemons: list[Daemon] = field(default_factory=list)
    _stdout: dict[int, Path] = field(default_factory=dict)

    # ---- commands

    def environ(self, **extra: str) -> dict[str, str]:
        """os.environ plus ``env`` plus `extra`: for subprocesses that call sbatch/srun/squeue."""
        return {**os.environ, **self.env, **extra}

    def run(self, *argv: str, check: bool = True, timeout: float = 30,
            **popen) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=popen.pop("env", None) or self.environ(), **popen)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n"
                               f"{proc.stderr}\n{self.diagnostics()}")
        return proc

    def submit(self, script: str | Path, *sbatch_args: str, cwd: str | Path | None = None,
               output: str | Path | None = None, env: dict[str, str] | None = None) -> int:
        """``sbatch --parsable [ARGS] SCRIPT``; returns the job id. The job's stdout goes to
        `output`, else to the script's own ``--output``, else to ``jobs_dir/slurm-%j.out``
        (never into the repository); ``stdout_path(job)`` tells where."""
        script = Path(script)
        args = list(sbatch_args)
        if output is not None:
            args.append(f"--output={output}")
        elif not _sets_output(script, args):
            args.append(f"--output={self.jobs_dir}/slurm-%j.out")
        out = self.run("sbatch", "--parsable", *args, str(script), cwd=str(cwd or self.jobs_dir),
                       env=env or self.environ()).stdout.strip()
        job = int(out.split(";")[0])
        std = self.job_info(job).get("StdOut")
        if std:
            self._stdout[job] = Path(std.replace("%j", str(job)))
        return job

    def job_info(self, job: int) -> dict[str, str]:
        """``scontrol -o show job N`` as a dict ({} once Slurm has forgotten the job)."""
        proc = self.run("scontrol", "-o", "show", "job", str(job), check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return {}
        return _parse_scontrol(proc.stdout.splitlines()[0])

    def job_state(self, job: int) -> str:
        """JobState (PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, ...); '' when unknown."""
        return self.job_info(job).get("JobState", "")

    def wait_state(self, job: int, states: str | Iterable[str], timeout: float = 60,
                   poll: float = 0.5) -> dict[str, str]:
        """Block until the job's state is one of `states`; return its job_info. Fails at once
        when the job reaches a terminal state that was not asked for."""
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while True:
            info = self.job_info(job)
            state = info.get("JobState", "")
            if state in wanted:
                return info
            if state in TERMINAL_STATES:
                raise AssertionError(f"job {job} ended {state} (reason {info.get('Reason')}, exit "
                                     f"{info.get('ExitCode')}), waiting for {sorted(wanted)}\n"
                                     f"{self.diagnostics(job)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job} still {state or 'unknown'} (reason "
                                   f"{info.get('Reason')}) after {timeout:.0f} s, waiting for "
                                   f"{sorted(wanted)}\n{self.diagnostics(job)}")
            time.sleep(poll)

    def release(self, job: int) -> None:
        """Let a requeued job start now: Slurm holds it (reason BeginTime) for ~165 s."""
        self.run("scontrol", "update", f"JobId={job}", "StartTime=now")

    def signal_batch(self, job: int, sig: str = "USR1") -> None:
        """What preemption does: ``scancel --signal=SIG --batch JOB`` (the batch shell only)."""
        self.run("scancel", f"--signal={sig}", "--batch", str(job))

    def cancel(self, job: int) -> None:
        self.run("scancel", str(job), check=False)

    def stdout_path(self, job: int) -> Path:
        """The job's stdout file (Slurm's StdOut, %j expanded)."""
        if job not in self._stdout:
            std = self.job_info(job).get("StdOut")
            if not std:
                raise KeyError(f"Slurm does not know job {job}")
            self._stdout[job] = Path(std.replace("%j", str(job)))
        return self._stdout[job]

    def node_state(self) -> str:
        proc = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%t", check=False)
        return proc.stdout.strip()

    def diagnostics(self, job: int | None = None) -> str:
        parts = []
        if job is not None:
            std = self._stdout.get(job)
            if std:
                parts.append(f"--- job {job} stdout ({std}):\n{_tail(std, 40)}")
        for d in self.daemons:
            parts.append(f"--- {d.name} ({d.log}):\n{_tail(d.log, 20)}")
        return "\n".join(parts)

    # ---- life cycle

    def cancel_all(self, timeout: float = 20) -> None:
        self.run("scancel", "--user=root", check=False)
        try:
            wait_for(lambda: not self.run("squeue", "-h", check=False).stdout.strip(), timeout,
                     "the queue to empty")
        except Exception:  # noqa: BLE001 - teardown goes on; the daemons are stopped anyway
            pass

    def stop(self) -> None:
        try:
            if all(d.proc.poll() is None for d in self.daemons):
                self.cancel_all()
        finally:
            for d in reversed(self.daemons):  # slurmd, slurmctld, munged
                d.stop()
            # job steps and their children still running carry SLURM_CONF=<our conf>
            _kill_pids(_pids_referencing(str(self.root)))


def _sets_output(script: Path, args: list[str]) -> bool:
    opts = [a for a in args]
    try:
        for line in script.read_text(errors="replace").splitlines():
            if line.startswith("#SBATCH"):
                opts += shlex.split(line[len("#SBATCH"):], comments=True)
    except OSError:
        pass
    return any(o in ("-o", "--output") or o.startswith(("--output=", "-o")) for o in opts)


def start_slurm(cpus: int | None = None, memory_mb: int = 2048,
                partition: str = "debug", timeout: float = 60) -> SlurmCluster:
    """Start munged, slurmctld and slurmd (root only); return the cluster once the node is idle."""
    root = make_state_dir("slurm")
    for sub in ("state", "spool", "run", "log", "jobs"):
        (root / sub).mkdir()
    (root / "jobs").chmod(0o1777)

    # munge: a private key and socket, owned by and run as the munge user
    munge = pwd.getpwnam("munge")
    mdir = root / "munge"
    mdir.mkdir(mode=0o700)
    key = mdir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for p in (mdir, key):
        os.chown(p, munge.pw_uid, munge.pw_gid)
    sock = mdir / "munge.socket"

    node = short_hostname()
    cpus = cpus or max(2, os.cpu_count() or 2)
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(node=node, ctld_port=free_port(), slurmd_port=free_port(),
                                      munge_socket=sock, root=root, cpus=cpus, memory=memory_mb,
                                      partition=partition))
    env = {"SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root=root, conf_path=conf, node=node, partition=partition, cpus=cpus,
                           env=env, jobs_dir=root / "jobs")
    daemon_env = {**os.environ, **env}
    try:
        cluster.daemons.append(start_daemon(
            "munged", [which("munged"), "--foreground", "--force", f"--socket={sock}",
                       f"--key-file={key}", f"--pid-file={mdir / 'munged.pid'}",
                       f"--log-file={mdir / 'munged.log'}", f"--seed-file={mdir / 'munged.seed'}"],
            root / "log" / "munged.out", env=daemon_env, user=munge.pw_uid, group=munge.pw_gid,
            extra_groups=[], cwd=str(mdir)))
        wait_for(sock.exists, 20, f"munged's socket {sock}", cluster.daemons)
        cluster.daemons.append(start_daemon(
            "slurmctld", [which("slurmctld"), "-D", "-f", str(conf)],
            root / "log" / "slurmctld.out", env=daemon_env, cwd=str(root)))
        cluster.daemons.append(start_daemon(
            "slurmd", [which("slurmd"), "-D", "-f", str(conf), "-N", node],
            root / "log" / "slurmd.out", env=daemon_env, cwd=str(root)))
        wait_for(lambda: cluster.node_state() == "idle", timeout, f"node {node} to be idle",
                 cluster.daemons, poll=0.5)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def stop_slurm(cluster: SlurmCluster) -> None:
    cluster.stop()
    if not os.environ.get("MEDTUNE_KEEP_INFRA"):
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real single-node Slurm for the session; skips unless root with Slurm and munge installed."""
    skip_unless_root_with("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "sinfo",
                          "scancel", "munged", what="a local Slurm")
    try:
        pwd.getpwnam("munge")
    except KeyError:
        pytest.skip(f"a local Slurm needs the munge user (Debian's munge package); {INSTALL_HINT}")
    cluster = start_slurm()
    try:
        yield cluster
    finally:
        stop_slurm(cluster)


# -------------------------------------------------------------------------------- OpenMPI


def openmpi_available() -> bool:
    return which("mpirun") is not None


@dataclass
class OpenMPI:
    """How tests run OpenMPI here: ``mpirun --allow-run-as-root --oversubscribe -np N ...``."""

    mpirun: str
    env: dict[str, str]  # extra environment for mpirun (see MPI_ENV)

    def command(self, np: int, *argv: str) -> list[str]:
        return [self.mpirun, "--allow-run-as-root", "--oversubscribe", "-np", str(np), *argv]

    def environ(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.env, **extra}


# Single-copy (CMA) shared memory needs ptrace rights that containers rarely grant; without
# this, transfers between local ranks print warnings or fail. Local only, so TCP/shm suffice.
MPI_ENV = {"OMPI_MCA_btl_vader_single_copy_mechanism": "none"}


@pytest.fixture(scope="session")
def openmpi() -> OpenMPI:
    if not openmpi_available():
        pytest.skip(f"OpenMPI's mpirun is missing; {INSTALL_HINT} (openmpi-bin)")
    return OpenMPI(mpirun=which("mpirun"), env=dict(MPI_ENV))


# -------------------------------------------------------------------------------- sshd + pdsh


SSHD_CONFIG = """\
# written by tests/integration/infra.py: root logs in with one throw-away key, loopback only
Port {port}
ListenAddress 127.0.0.1
HostKey {root}/host_ed25519
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
MaxSessions 100
LogLevel INFO
"""

SSH_CONFIG = """\
# written by tests/integration/infra.py
Host {hosts}
    HostName 127.0.0.1
    Port {port}
    User root
    IdentityFile {root}/id_ed25519
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /dev/null
    BatchMode yes
    LogLevel ERROR
"""


@dataclass
class LoopbackSSH:
    """sshd on 127.0.0.1:port; every name in `hosts` reaches it as root."""

    root: Path
    port: int
    hosts: list[str]        # ["node-a", "node-b"]
    config_path: Path       # ssh client config (Host aliases, key, no host key checks)
    key_path: Path          # client private key
    bin_dir: Path           # holds `ssh`, a wrapper adding -F config_path
    env: dict[str, str]     # PDSH_RCMD_TYPE, PDSH_SSH_ARGS_APPEND, PATH (bin_dir first)
    daemon: Daemon

    def environ(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.env, **extra}

    def ssh(self, host: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", str(self.config_path), host, command],
                              capture_output=True, text=True, timeout=timeout, env=self.environ())

    def pdsh(self, command: str, hosts: Iterable[str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
        """``pdsh -R ssh -w HOSTS COMMAND``; each output line reads 'host: ...'."""
        return subprocess.run(["pdsh", "-R", "ssh", "-w", ",".join(hosts or self.hosts), command],
                               capture_output=True, text=True, timeout=timeout, env=self.environ())

    def stop(self) -> None:
        self.daemon.stop()
        _kill_pids(_pids_referencing(str(self.root)))


def start_sshd(hosts: Iterable[str] = ("node-a", "node-b"), timeout: float = 20) -> LoopbackSSH:
    root = make_state_dir("sshd")
    root.chmod(0o700)
    for name in ("host_ed25519", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"medtune-test-{name}",
                        "-f", str(root / name)], check=True, capture_output=True)
    (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
    (root / "authorized_keys").chmod(0o600)
    port = free_port()
    hosts = list(hosts)
    (root / "sshd_config").write_text(SSHD_CONFIG.format(port=port, root=root))
    cfg = root / "ssh_config"
    cfg.write_text(SSH_CONFIG.format(hosts=" ".join(hosts), port=port, root=root))
    bin_dir = root / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(which("ssh"))} -F {shlex.quote(str(cfg))} "$@"\n')
    wrapper.chmod(0o755)
    # sshd refuses to start without its privilege separation directory
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    sshd = which("sshd")
    test = subprocess.run([sshd, "-t", "-f", str(root / "sshd_config")], capture_output=True, text=True)
    if test.returncode != 0:
        raise RuntimeError(f"sshd -t rejected the config: {test.stderr}")
    daemon = start_daemon("sshd", [sshd, "-D", "-e", "-f", str(root / "sshd_config")],
                          root / "sshd.log", cwd=str(root))
    env = {"PDSH_RCMD_TYPE": "ssh", "PDSH_SSH_ARGS_APPEND": f"-F {cfg}",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = LoopbackSSH(root=root, port=port, hosts=hosts, config_path=cfg,
                         key_path=root / "id_ed25519", bin_dir=bin_dir, env=env, daemon=daemon)

    def answers() -> bool:
        return server.ssh(hosts[0], "true", timeout=10).returncode == 0
    try:
        wait_for(answers, timeout, f"sshd on 127.0.0.1:{port}", [daemon], poll=0.3)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def loopback_sshd() -> Iterator[LoopbackSSH]:
    """sshd on a loopback port, reachable as node-a and node-b; skips unless root with sshd/pdsh."""
    skip_unless_root_with("sshd", "ssh", "ssh-keygen", "pdsh", what="pdsh over a loopback sshd")
    server = start_sshd()
    try:
        yield server
    finally:
        server.stop()
        if not os.environ.get("MEDTUNE_KEEP_INFRA"):
            shutil.rmtree(server.root, ignore_errors=True)
