"""From a verb's recipe and options to a `LaunchPlan`, and from its exit code to what the user reads.

The run directory, the rendezvous port, the resume flags the ranks get and
each verb's plan (``train``: `train_plan`, ``launch``: `hostfile_plan`,
``slurm``: `slurm_plan`) are decided here, not in the command line; `start`
runs a ranks plan and explains how it ended (`medtune.launcher.diagnose`).
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import yaml

from medtune import config
from medtune.base import exitcodes
from medtune.base.errors import UserError
from medtune.launcher import deepspeed, hostfile, slurm
from medtune.launcher.diagnose import failed_rank
from medtune.launcher.plan import LaunchPlan, execute


def run_directory(given: str | None, recipe: config.Recipe) -> Path:
    """``given`` (``--run-dir``), else ``runs/<recipe name>`` (``name:``, default the recipe file's
    stem), made absolute against the current directory.

    The default is the same on every call, so rerunning the same command
    after a stop, a crash or Ctrl-C resumes the run instead of starting over
    elsewhere (as Hugging Face Trainer-based tools do with their
    ``output_dir``); the preflight refuses a changed recipe and does not
    retrain a finished run.
    """
    return Path(given or f"runs/{recipe.name}").resolve()


def resume_argv(resume: str, allow_changed: bool) -> tuple[str, ...]:
    """The ranks' resume flags: ``--resume auto|none|PATH`` and ``--allow-changed`` when given."""
    return ("--resume", resume) + (("--allow-changed",) if allow_changed else ())


def free_port() -> int:
    """A TCP port free on this machine now (the kernel's choice for port 0 on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_plan(recipe: config.Recipe, run_dir: Path, resume: str = "auto",
               allow_changed: bool = False) -> LaunchPlan:
    """``medtune train``: ``launch.procs`` ranks here, on ``launch.master_port`` or a free port."""
    return deepspeed.local_plan(recipe.launch.procs, run_dir / "recipe.yaml", run_dir,
                                recipe.launch.master_port or free_port(),
                                extra=resume_argv(resume, allow_changed))


def hostfile_plan(recipe: config.Recipe, hostfile_path: str | Path, launcher: str, run_dir: Path,
                  environ: dict[str, str], master_addr: str | None = None, master_port: int | None = None,
                  node_rank: int | None = None, resume: str = "auto",
                  allow_changed: bool = False) -> tuple[LaunchPlan, int]:
    """``medtune launch``: the plan and this node's first global rank.

    Refuses (`UserError`, one line) a hostfile that does not match
    ``launch.nodes`` x ``launch.procs``, ``no_ssh`` without ``--node-rank``
    or with one outside the hostfile (DeepSpeed's runner would stop with a
    bare AssertionError), and ``no_ssh`` without a port every node can name.
    The port is ``--master-port``, else ``launch.master_port``, else (not
    ``no_ssh``) a free one; the rendezvous address is ``--master-addr``,
    else with ``no_ssh`` the first host's address, else DeepSpeed's choice.
    """
    hosts = hostfile.parse(hostfile_path)
    hostfile.check_against(hosts, hostfile_path, recipe.launch.nodes, recipe.launch.procs)
    if launcher == "no_ssh" and node_rank is None:
        raise UserError("--launcher no_ssh needs --node-rank (0 on the first host, 1 on the next, ...)")
    if node_rank is not None and not 0 <= node_rank < len(hosts):
        raise UserError(f"--node-rank {node_rank}: {hostfile_path} lists {len(hosts)} hosts, "
                        f"so 0 to {len(hosts) - 1}")
    port = master_port or recipe.launch.master_port
    if port is None and launcher == "no_ssh":
        raise UserError("--launcher no_ssh needs --master-port: every node must name the same one")
    master = master_addr or (hosts[0].address if launcher == "no_ssh" else None)
    plan = deepspeed.cluster_plan(Path(hostfile_path).resolve(), launcher, run_dir / "recipe.yaml", run_dir,
                                  port or free_port(), environ, master, node_rank,
                                  extra=resume_argv(resume, allow_changed))
    return plan, (node_rank or 0) * recipe.launch.procs


def slurm_plan(recipe: config.Recipe, run_dir: Path, gpus_per_node: int, *, job_name: str | None = None,
               partition: str | None = None, time: str | None = None, account: str | None = None,
               grace: int = 120, out: str | Path | None = None, submit: bool = False) -> LaunchPlan:
    """``medtune slurm``: the resolved recipe at ``RUN_DIR/recipe.yaml``, the batch script at `out`
    (default ``RUN_DIR/job.sbatch``), and ``sbatch`` when `submit`.

    The job's shape is ``launch.nodes`` x ``launch.procs`` of `recipe` (the
    command line's ``--nodes``/``--gpus-per-node``, recorded in the recipe the
    ranks read); its port ``launch.master_port``, else one derived from the
    job id inside the script (`slurm.PORT_BASE`).
    """
    job = slurm.SlurmJob(job_name=job_name or recipe.name, nodes=recipe.launch.nodes,
                         procs_per_node=recipe.launch.procs, gpus_per_node=gpus_per_node,
                         recipe_file=run_dir / "recipe.yaml", run_dir=run_dir,
                         master_port=recipe.launch.master_port, partition=partition, time=time,
                         account=account, tasks=recipe.launch.slurm_tasks, grace_seconds=grace)
    script = Path(out).resolve() if out else run_dir / "job.sbatch"
    return slurm.plan(job, recipe_text(recipe), script, submit)


def recipe_text(recipe: config.Recipe) -> str:
    """The resolved recipe as `config.dump` writes it (``config.load`` of it gives `recipe` again)."""
    return yaml.safe_dump(config.to_dict(recipe), sort_keys=False)


def start(plan: LaunchPlan, run_dir: Path, first_rank: int = 0) -> int:
    """Run a ranks plan and say how it ended, on stderr; its exit code.

    Prints the run directory and the command first; after a stop on request
    (`exitcodes.PREEMPTED`) how to resume; after a failure the rank that
    failed (`failed_rank`, `first_rank` being this node's first global rank)
    and the log to read.
    """
    print(f"[medtune] run directory: {run_dir}", file=sys.stderr)
    print(f"[medtune] {plan.shell()}", file=sys.stderr, flush=True)
    code = execute(plan)
    if code == exitcodes.PREEMPTED:
        print(f"[medtune] stopped on request after a checkpoint (exit {code}); the same command "
              f"resumes it (--run-dir {run_dir})", file=sys.stderr)
    elif code != 0:
        failed = failed_rank(plan.log, first_rank)
        print(f"medtune: error: training exited with code {code}{': ' + failed if failed else ''}; "
              f"see {plan.log}", file=sys.stderr)
    return code
