"""DeepSpeed runner commands, built then executed.

`local_plan` (ranks on this machine) and `cluster_plan` (a hostfile's nodes)
are pure functions of their arguments (tested without launching);
`execute` runs a plan, tees its output to a log file, forwards stop signals
to the ranks and returns the exit code of the first rank that failed.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

RANK_MODULE = "medtune.engine.main"


@dataclass(frozen=True)
class LaunchPlan:
    argv: tuple[str, ...]
    """The command to run."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables added to the caller's environment."""
    log: Path | None = None
    """File that receives a copy of everything the ranks print."""
    files: dict[Path, str] = field(default_factory=dict)
    """Files `execute` writes before it runs the command (a dry run writes none)."""

    def shell(self) -> str:
        import shlex

        pre = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (pre + " " if pre else "") + shlex.join(self.argv)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_plan(procs: int, recipe_file: Path, run_dir: Path, master_port: int,
               python: str = sys.executable, extra: tuple[str, ...] = ()) -> LaunchPlan:
    """``procs`` ranks on this machine through ``deepspeed --num_gpus`` (CPU ranks without GPUs)."""
    argv = (python, "-u", "-m", "deepspeed.launcher.runner", "--num_gpus", str(procs),
            "--master_port", str(master_port), "--module", RANK_MODULE,
            "--recipe", str(recipe_file), "--run-dir", str(run_dir), *extra)
    return LaunchPlan(argv, {"PYTHONUNBUFFERED": "1"}, run_dir / "logs" / "launcher.log")


# Variables every node's ranks need, passed through DeepSpeed's .deepspeed_env.
EXPORTED_PREFIXES = ("NCCL_", "FI_", "UCX_", "CUDA_", "HF_", "TRANSFORMERS_", "MEDTUNE_", "TORCH_",
                     "OMP_", "DS_", "GLOO_", "TOKENIZERS_")
EXPORTED_NAMES = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH")
LAUNCHERS = ("pdsh", "openmpi", "mvapich", "no_ssh")


def env_file(environ: dict[str, str]) -> str:
    """The ``.deepspeed_env`` lines (``KEY=value``) for the variables the ranks need."""
    keys = sorted(k for k in environ
                  if k in EXPORTED_NAMES or k.startswith(EXPORTED_PREFIXES))
    return "".join(f"{k}={environ[k]}\n" for k in keys if "\n" not in environ[k])


def cluster_plan(hostfile: Path, launcher: str, recipe_file: Path, run_dir: Path, master_port: int,
                 environ: dict[str, str], master_addr: str | None = None, node_rank: int | None = None,
                 python: str = sys.executable, extra: tuple[str, ...] = ()) -> LaunchPlan:
    """The DeepSpeed runner over a hostfile: pdsh, OpenMPI, MVAPICH, or one node of a no-ssh job.

    With ``no_ssh`` every node runs this itself with its own ``node_rank``
    and the same ``master_addr`` (the first host unless given).
    """
    ds_env = run_dir / ".deepspeed_env"
    argv = [python, "-u", "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile),
            "--master_port", str(master_port)]
    if master_addr:
        argv += ["--master_addr", master_addr]
    if launcher == "no_ssh":
        argv += ["--no_ssh", "--node_rank", str(node_rank or 0)]
    else:
        argv += ["--launcher", launcher]
    argv += ["--module", RANK_MODULE, "--recipe", str(recipe_file), "--run-dir", str(run_dir), *extra]
    log = run_dir / "logs" / (f"launcher-node{node_rank or 0}.log" if launcher == "no_ssh" else "launcher.log")
    return LaunchPlan(tuple(argv), {"PYTHONUNBUFFERED": "1", "DS_ENV_FILE": str(ds_env)}, log,
                      {ds_env: env_file(environ)})


def execute(plan: LaunchPlan) -> int:
    """Write the plan's files, run it, and forward SIGINT, SIGTERM and SIGUSR1 to it."""
    for path, text in plan.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {**os.environ, **plan.env}
    log = _LogCopy(plan.log) if plan.log is not None else None
    # Same process group as ours: a Ctrl-C, a hang-up or a kill of the group
    # reaches every rank, and nothing outlives this command.
    proc = subprocess.Popen(plan.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def forward(signum, _frame):
        # SIGTERM/SIGUSR1 mean "checkpoint and stop": they go to the ranks only,
        # since DeepSpeed's launcher would answer SIGTERM by killing the ranks
        # after 30 s, mid-save, and dies of an unhandled SIGUSR1.
        ranks = _ranks(proc.pid) if signum != signal.SIGINT else []
        try:
            for rank in ranks or [proc]:
                rank.send_signal(signum)
        except (ProcessLookupError, OSError):
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        out = sys.stdout.buffer
        for chunk in iter(lambda: os.read(proc.stdout.fileno(), 65536), b""):
            out.write(chunk)
            out.flush()
            if log is not None:
                log.write(chunk)
        return proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if log is not None:
            log.close()


class _LogCopy:
    """The launcher's copy of the ranks' output (``RUN_DIR/logs/launcher.log``).

    A write that fails (a full disk, a vanished mount) stops the copy, says so
    once on stderr, and never stops the run: the output still streams to the
    terminal, and the ranks still report their own errors there.
    """

    def __init__(self, path: Path):
        self.path, self.fh = path, None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(path, "ab")
        except OSError as err:
            self._stop(err)

    def write(self, chunk: bytes) -> None:
        if self.fh is None:
            return
        try:
            self.fh.write(chunk)
            self.fh.flush()
        except OSError as err:
            self._stop(err)

    def close(self) -> None:
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError as err:
                self._stop(err)

    def _stop(self, err: OSError) -> None:
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:
                pass
            self.fh = None
        print(f"[medtune] the log copy {self.path} stopped ({err}); the output continues here only",
              file=sys.stderr, flush=True)


def _ranks(pid: int) -> list:
    """The rank processes started under `pid` (found by their module name)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for child in children:
        try:
            argv = child.cmdline()
            # `python -m medtune.engine.main`: the runner and DeepSpeed's launcher
            # also name the module, but after --module, never after -m
            if any(a == "-m" and b == RANK_MODULE for a, b in zip(argv, argv[1:])):
                found.append(child)
        except psutil.Error:
            continue
    return found
