"""A Slurm batch script for a recipe: rendered by a pure function, submitted by `submit`.

Two shapes, as the recipe's ``launch.slurm_tasks`` says:

- ``per_rank`` (default): one ``srun`` task per rank running
  ``python -m medtune.engine.main``; ranks learn who they are from
  ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``.
- ``per_node``: one task per node running ``medtune launch --launcher no_ssh
  --node-rank $SLURM_NODEID``, i.e. the DeepSpeed launcher on every node.

Preemption: ``#SBATCH --signal=B:USR1@GRACE`` tells the batch shell, which
passes USR1 to the ranks (only to them: DeepSpeed's launcher dies of it);
they checkpoint the step in progress and exit 75, and the script requeues
the job, which resumes with ``--resume auto``. Every value that comes from a
recipe or the command line is shell-quoted.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from medtune.base import exitcodes
from medtune.base.errors import UserError

_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")


class SlurmError(UserError):
    """A value Slurm would reject or misread."""


@dataclass(frozen=True)
class SlurmJob:
    job_name: str
    nodes: int
    procs_per_node: int
    gpus_per_node: int
    recipe_file: Path
    """The resolved recipe every rank reads."""
    run_dir: Path
    master_port: int
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    tasks: str = "per_rank"
    grace_seconds: int = 120
    python: str = sys.executable


def validate(job: SlurmJob) -> None:
    """Refuse values Slurm would misread, with the option that carries them."""
    if not job.job_name.strip() or any(c in job.job_name for c in "\n\r\0"):
        raise SlurmError(f"--job-name {job.job_name!r}: must be one non-empty line")
    # sbatch ends an #SBATCH value at the first blank and honours no quotes
    for name in ("partition", "account", "time"):
        value = getattr(job, name)
        if value is not None and (not value or any(c.isspace() or c == "\0" for c in value)):
            raise SlurmError(f"--{name} {value!r}: must be one word")
    if any(c.isspace() for c in str(job.run_dir)):
        raise SlurmError(f"--run-dir {str(job.run_dir)!r}: Slurm cannot take an output path with blanks")
    if job.time is not None and not _TIME.match(job.time):
        raise SlurmError(f"--time {job.time!r}: use Slurm's [D-]HH:MM:SS, MM:SS or minutes")
    if job.nodes < 1 or job.procs_per_node < 1 or job.gpus_per_node < 0:
        raise SlurmError(f"--nodes {job.nodes} / --gpus-per-node {job.gpus_per_node}: "
                         "need at least 1 node and 1 rank per node")
    if job.gpus_per_node and job.gpus_per_node != job.procs_per_node:
        raise SlurmError(f"--gpus-per-node {job.gpus_per_node} but launch.procs="
                         f"{job.procs_per_node}: one rank per GPU")
    if job.tasks not in ("per_rank", "per_node"):
        raise SlurmError(f"launch.slurm_tasks {job.tasks!r}: per_rank or per_node")
    if job.grace_seconds < 10:
        raise SlurmError(f"grace {job.grace_seconds}s: give the ranks at least 10 s to checkpoint")


def render(job: SlurmJob) -> str:
    """The sbatch script (a pure function of `job`)."""
    validate(job)
    q = shlex.quote
    per_rank = job.tasks == "per_rank"


    head = [
        "#!/bin/bash",
        # sbatch cuts #SBATCH values at the first blank; `submit` passes the
        # exact name on sbatch's command line, which wins over this line
        f"#SBATCH --job-name={'_'.join(job.job_name.split())}",
        f"#SBATCH --nodes={job.nodes}",
        f"#SBATCH --ntasks-per-node={job.procs_per_node if per_rank else 1}",
        f"#SBATCH --output={job.run_dir / 'logs' / 'slurm-%j.out'}",
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
        f"#SBATCH --signal=B:USR1@{job.grace_seconds}",
    ]
    if job.gpus_per_node:
        head.append(f"#SBATCH --gpus-per-node={job.gpus_per_node}")
    head += [f"#SBATCH --{k}={v}" for k, v in
             (("partition", job.partition), ("time", job.time), ("account", job.account)) if v]
    rank_cmd = [job.python, "-u", "-m", "medtune.engine.main", "--recipe", str(job.recipe_file),
                "--run-dir", str(job.run_dir), "--resume", "auto"]
    node_cmd = [job.python, "-u", "-m", "medtune.cli", "launch", str(job.recipe_file),
                "--launcher", "no_ssh", "--run-dir", str(job.run_dir), "--resume", "auto"]
    dynamic = (' --hostfile "$HOSTFILE" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT"'
               ' --node-rank "$SLURM_NODEID"')
    step = ("srun --kill-on-bad-exit=1 " + shlex.join(rank_cmd) if per_rank else
            "srun --kill-on-bad-exit=1 bash -c " + q(shlex.join(node_cmd) + dynamic))
    hostfile = ("" if per_rank else
                f"export HOSTFILE={q(str(job.run_dir))}/hostfile.$SLURM_JOB_ID\n"
                f"scontrol show hostnames \"$SLURM_JOB_NODELIST\" | sed 's/$/ slots={job.procs_per_node}/'"
                ' > "$HOSTFILE"\n')
    body = f"""
set -u
# Rendezvous on the first node of the allocation.
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT={job.master_port}
export PYTHONUNBUFFERED=1
mkdir -p {q(str(job.run_dir / 'logs'))}
{hostfile}
on_usr1() {{
  # Slurm warns us before the time limit or a preemption: the ranks finish
  # the step in progress, write a checkpoint together and exit {exitcodes.PREEMPTED}.
  echo "[medtune] USR1: asking every rank to checkpoint (restart ${{SLURM_RESTART_COUNT:-0}})"
  srun --overlap --ntasks-per-node=1 pkill -USR1 -f '^[^ ]*python[^ ]* -u -m medtune[.]engine[.]main' || true
}}
trap on_usr1 USR1

echo "[medtune] job $SLURM_JOB_ID restart ${{SLURM_RESTART_COUNT:-0}} on $SLURM_JOB_NODELIST"
{step} &
step_pid=$!
# `wait` returns early when USR1 arrives; keep waiting for the step itself.
while true; do
  wait "$step_pid"; code=$?
  kill -0 "$step_pid" 2>/dev/null || break
done
if [ "$code" -eq {exitcodes.PREEMPTED} ]; then
  echo "[medtune] checkpoint written (exit $code): requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
exit "$code"
"""
    return "\n".join(head) + "\n" + body


def submit(script: Path, job_name: str, env: dict[str, str] | None = None) -> str:
    """``sbatch --parsable --job-name NAME SCRIPT`` (no shell): the job id, or a `SlurmError`."""
    done = subprocess.run(["sbatch", "--parsable", f"--job-name={job_name}", str(script)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SlurmError(f"sbatch {script} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]
