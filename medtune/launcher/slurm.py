"""A Slurm job for a recipe as a `LaunchPlan`: the batch script (rendered by a pure function),
the resolved recipe, and ``sbatch`` when submitting.

The script first runs the preflight once, on the batch host, before any
rank (``python -m medtune.engine.preflight``: recipe checks, data
preparation, the resume plan); its exit code `FINISHED` (the run is
complete) ends the job with 0, any other failure ends it with that code.
Then ``srun`` starts the ranks, in one of two shapes, as the recipe's
``launch.slurm_tasks`` says:

- ``per_rank`` (default): one ``srun`` task per rank running
  ``python -m medtune.engine.main``; ranks learn who they are from
  ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``.
- ``per_node``: one task per node running DeepSpeed's runner with
  ``--no_ssh --node_rank $SLURM_NODEID`` over a hostfile of the allocation.

Preemption: ``#SBATCH --signal=B:USR1@GRACE`` tells the batch shell, which
passes USR1 to the ranks (only to them: DeepSpeed's launcher dies of it);
they checkpoint the step in progress and exit 75, and the script requeues
the job, which resumes with ``--resume auto``. Every value that comes from a
recipe or the command line is shell-quoted.
"""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from medtune.base import exitcodes
from medtune.base.errors import UserError
from medtune.launcher.plan import RANK_MODULE, LaunchPlan

PREFLIGHT_MODULE = "medtune.engine.preflight"
FINISHED = 3
"""The preflight's exit code for "the run is already complete: nothing to do" (the script exits 0)."""
PORT_BASE, PORT_SPAN = 15000, 15000
"""Without ``launch.master_port``: port 15000 + job id mod 15000, below Linux's ephemeral range
(32768-60999), so two jobs sharing a node do not both take 29500 (DeepSpeed#3916)."""

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
    master_port: int | None
    """Fixed rendezvous port (``launch.master_port``); None: one derived from the job id."""
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    tasks: str = "per_rank"
    grace_seconds: int = 120
    python: str = sys.executable

    @property
    def world(self) -> int:
        """Ranks in the job: nodes x ranks per node."""
        return self.nodes * self.procs_per_node


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
    """The sbatch script (a pure function of `job`): `_header`, then the preflight once, then the ranks."""
    validate(job)
    return _header(job) + "\n" + _body(job)


def _header(job: SlurmJob) -> str:
    per_rank = job.tasks == "per_rank"
    head = [
        "#!/bin/bash",
        # sbatch cuts #SBATCH values at the first blank; `plan` passes the
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
    return "\n".join(head)


def preflight_argv(job: SlurmJob) -> list[str]:
    """The once-per-job-start check on the batch host: ``python -m medtune.engine.preflight
    --recipe R --run-dir D --world N --resume auto`` (exit 0: start the ranks, `FINISHED`:
    nothing to do, 2: a user error)."""
    return [job.python, "-u", "-m", PREFLIGHT_MODULE, "--recipe", str(job.recipe_file),
            "--run-dir", str(job.run_dir), "--world", str(job.world), "--resume", "auto"]


def rank_pattern(job: SlurmJob) -> str:
    """The extended regular expression ``pkill -f`` matches this job's ranks by: the rank module
    and ``--run-dir`` of this run, so ranks of other runs on a shared node are never signalled.

    >>> rank_pattern(SlurmJob(job_name="j", nodes=1, procs_per_node=1, gpus_per_node=0,
    ...                       recipe_file=Path("/r/x.yaml"), run_dir=Path("/runs/a.b"), master_port=None))
    '^[^ ]*python[^ ]* -u -m medtune[.]engine[.]main .*--run-dir /runs/a[.]b( |$)'
    """
    return (r"^[^ ]*python[^ ]* -u -m " + _ere_literal(RANK_MODULE)
            + r" .*--run-dir " + _ere_literal(str(job.run_dir)) + "( |$)")


def _ere_literal(text: str) -> str:
    """`text` as a POSIX extended regular expression that matches exactly it."""
    return "".join(f"[{c}]" if c in ".*+?(){}|$[\\" else "\\^" if c == "^" else "[]]" if c == "]" else c
                   for c in text)


def step_command(job: SlurmJob) -> str:
    """The ``srun`` line: one task per rank running the rank module, or one task per node running
    DeepSpeed's runner with ``--no_ssh`` (never both: ``srun deepspeed`` on every rank's task
    starts ranks x ranks processes, DeepSpeedExamples#893)."""
    q = shlex.quote
    rank_args = ["--recipe", str(job.recipe_file), "--run-dir", str(job.run_dir), "--resume", "auto"]
    if job.tasks == "per_rank":
        return "srun --kill-on-bad-exit=1 " + shlex.join([job.python, "-u", "-m", RANK_MODULE, *rank_args])
    runner = (shlex.join([job.python, "-u", "-m", "deepspeed.launcher.runner"])
              + ' --hostfile "$HOSTFILE" --no_ssh --node_rank "$SLURM_NODEID"'
              + ' --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" '
              + shlex.join(["--module", RANK_MODULE, *rank_args]))
    return "srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c " + q(runner)


def _body(job: SlurmJob) -> str:
    q = shlex.quote
    port = (str(job.master_port) if job.master_port is not None else
            f"$(( {PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN} ))")
    hostfile = ("" if job.tasks == "per_rank" else
                f"export HOSTFILE={q(str(job.run_dir))}/hostfile.$SLURM_JOB_ID\n"
                f"scontrol show hostnames \"$SLURM_JOB_NODELIST\" | sed 's/$/ slots={job.procs_per_node}/'"
                ' > "$HOSTFILE"\n')
    return f"""
set -u
# Rendezvous on the first node of the allocation{"" if job.master_port is not None else
    chr(10) + "# on a port of this job's own: two jobs sharing a node never share one"}.
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT={port}
export PYTHONUNBUFFERED=1
mkdir -p {q(str(job.run_dir / 'logs'))}
{hostfile}
echo "[medtune] job $SLURM_JOB_ID restart ${{SLURM_RESTART_COUNT:-0}} on $SLURM_JOB_NODELIST"
# Once, here on the batch host, before any rank: check the recipe, prepare the data, plan the resume.
{shlex.join(preflight_argv(job))}
code=$?
if [ "$code" -eq {FINISHED} ]; then
  echo "[medtune] {job.run_dir} is complete: nothing to do"
  exit 0
elif [ "$code" -ne 0 ]; then
  echo "[medtune] preflight failed (exit $code): no rank was started"
  exit "$code"
fi

on_usr1() {{
  # Slurm warns us before the time limit or a preemption: the ranks finish
  # the step in progress, write a checkpoint together and exit {exitcodes.PREEMPTED}.
  echo "[medtune] USR1: asking every rank to checkpoint (restart ${{SLURM_RESTART_COUNT:-0}})"
  srun --overlap --ntasks-per-node=1 pkill -USR1 -f {shlex.quote(rank_pattern(job))} || true
}}
trap on_usr1 USR1

{step_command(job)} &
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


def plan(job: SlurmJob, recipe_text: str, script: Path, submit: bool) -> LaunchPlan:
    """The files of a Slurm job and, with `submit`, ``sbatch --parsable --job-name NAME SCRIPT``.

    Files: the batch script (`render`, at `script`; first, so that a dry run
    shows it first) and the resolved recipe (`recipe_text`, at
    ``job.recipe_file``), both written before sbatch runs; directory: ``RUN_DIR/logs``, where
    Slurm opens the job's output before the script runs. The job name goes on
    sbatch's command line exactly (no shell: a name is never run as a command).
    """
    text = render(job)
    argv = ("sbatch", "--parsable", f"--job-name={job.job_name}", str(script)) if submit else ()
    return LaunchPlan(argv, files={script: text, job.recipe_file: recipe_text},
                      dirs=(job.run_dir / "logs",), kind="sbatch")
