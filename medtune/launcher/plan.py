"""One launch shape: a `LaunchPlan` (files, command, environment, log) that `execute` runs.

Every backend builds one with a pure function (no process is started, no
file written): `medtune.launcher.deepspeed.local_plan` (this machine's
ranks), `~.deepspeed.cluster_plan` (a hostfile's nodes over pdsh, OpenMPI,
MVAPICH, or one node of a no-ssh job) and `medtune.launcher.slurm.plan` (a
batch script, submitted with ``sbatch`` or only written). ``--dry-run``
prints `describe`; `execute` writes the files and runs the command.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medtune.base.errors import UserError
from medtune.base.fsutil import write_atomic

RANK_MODULE = "medtune.engine.main"


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch does: write `files` (and make `dirs`), then run `argv` with `env` added."""
    argv: tuple[str, ...]
    """The command to run; empty when the plan only writes files (a Slurm script not submitted)."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables added to the caller's environment."""
    log: Path | None = None
    """File that receives a copy of everything the ranks print."""
    files: dict[Path, str] = field(default_factory=dict)
    """Files `execute` writes (atomically) before it runs the command; a dry run writes none."""
    dirs: tuple[Path, ...] = ()
    """Directories `execute` creates first (Slurm opens the job's output file in one)."""
    kind: Literal["ranks", "sbatch"] = "ranks"
    """``ranks``: the command runs the ranks, its output streams to the terminal and `log`;
    ``sbatch``: the command submits a job and prints its id (``sbatch --parsable``)."""

    def shell(self) -> str:
        """The command as one shell line, its environment first (``K=V ... argv``)."""
        pre = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (pre + " " if pre else "") + shlex.join(self.argv)


def describe(plan: LaunchPlan) -> str:
    """What `execute` would do, as ``--dry-run`` prints it: the command line first, then each
    directory and each file with its full text."""
    lines = [plan.shell() if plan.argv else "# nothing is run: the files below are only written"]
    lines += [f"# mkdir -p {shlex.quote(str(d))}" for d in plan.dirs]
    for path, text in plan.files.items():
        lines.append(f"# {path} (written at launch):")
        lines.append(text.rstrip("\n"))
    return "\n".join(lines) + "\n"


def execute(plan: LaunchPlan) -> int:
    """Make the plan's directories, write its files, then run its command; its exit code.

    ``ranks``: the command's output is copied to the terminal and `LaunchPlan.log`;
    SIGINT, SIGTERM and SIGUSR1 are forwarded to it (see `_stream`).
    ``sbatch``: prints ``wrote PATH`` per file and ``submitted job ID``; a refused
    submission raises `UserError` naming the script and sbatch's own message.
    """
    for d in plan.dirs:
        d.mkdir(parents=True, exist_ok=True)
    for path, text in plan.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    if plan.kind == "sbatch":
        return _submit(plan)
    return _stream(plan) if plan.argv else 0


def _submit(plan: LaunchPlan) -> int:
    for path in plan.files:
        print(f"wrote {path}")
    if not plan.argv:
        return 0
    done = subprocess.run(plan.argv, capture_output=True, text=True, env={**os.environ, **plan.env})
    if done.returncode != 0:
        raise UserError(f"{shlex.join(plan.argv)} failed: {done.stderr.strip() or done.stdout.strip()}")
    print(f"submitted job {done.stdout.strip().split(';')[0]}")  # --parsable: "ID" or "ID;CLUSTER"
    return 0


def _stream(plan: LaunchPlan) -> int:
    """Run the ranks' command, tee its output, and forward stop signals to the ranks."""
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
