"""The DeepSpeed runner command for ranks on this machine, built then executed.

`local_plan` is a pure function of its arguments (tested without launching);
`execute` runs a plan, tees its output to a log file and returns the exit
code of the first rank that failed.
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


def execute(plan: LaunchPlan) -> int:
    """Run the plan in its own process group; forward SIGINT/SIGTERM/SIGUSR1 to it."""
    env = {**os.environ, **plan.env}
    log = None
    if plan.log is not None:
        plan.log.parent.mkdir(parents=True, exist_ok=True)
        log = open(plan.log, "ab")
    proc = subprocess.Popen(plan.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def forward(signum, _frame):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
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
