"""DeepSpeed runner commands as `LaunchPlan`s: this machine's ranks, or a hostfile's nodes.

`local_plan` and `cluster_plan` are pure functions of their arguments
(tests/unit/launcher/test_launch_plans.py feeds every argv they build to DeepSpeed's
own ``deepspeed.launcher.runner.parse_args``); `medtune.launcher.plan.execute`
runs them.
"""
from __future__ import annotations

import sys
from pathlib import Path

from medtune.launcher.plan import RANK_MODULE, LaunchPlan

RUNNER = "deepspeed.launcher.runner"
LAUNCHERS = ("pdsh", "openmpi", "mvapich", "no_ssh")
# Variables every node's ranks need, passed through DeepSpeed's .deepspeed_env. DeepSpeed's
# runner itself exports only MLFLOW*, PYTHON*, MV2*, UCX* and the accelerator's (NCCL* on CUDA):
# a tracker's WANDB_API_KEY set here was lost on the other nodes (ArcticTraining#316).
EXPORTED_PREFIXES = ("NCCL_", "FI_", "UCX_", "CUDA_", "HF_", "TRANSFORMERS_", "MEDTUNE_", "TORCH_",
                     "OMP_", "DS_", "GLOO_", "TOKENIZERS_", "WANDB_", "MLFLOW_")
EXPORTED_NAMES = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH")
# DeepSpeed's runner wraps a value with other characters in double quotes for the remote shell
# (multinode_runner.add_export), where these would expand or end the quotes.
_UNSAFE = ('"', "$", "`", "\\", "\n", "\r")


def _runner(python: str) -> list[str]:
    return [python, "-u", "-m", RUNNER]


def _rank_args(recipe_file: Path, run_dir: Path, extra: tuple[str, ...]) -> list[str]:
    """``--module medtune.engine.main --recipe R --run-dir D ...``: after every runner option, since
    the runner hands everything after the module to the ranks (DeepSpeed#1656: a ``--master_port``
    written after the script reached the script, and the default 29500 was used)."""
    return ["--module", RANK_MODULE, "--recipe", str(recipe_file), "--run-dir", str(run_dir), *extra]


def local_plan(procs: int, recipe_file: Path, run_dir: Path, master_port: int,
               python: str = sys.executable, extra: tuple[str, ...] = ()) -> LaunchPlan:
    """``procs`` ranks on this machine through ``deepspeed --num_gpus`` (CPU ranks without GPUs).

    Log: ``RUN_DIR/logs/launcher.log``; environment: ``PYTHONUNBUFFERED=1``.
    """
    argv = (*_runner(python), "--num_gpus", str(procs), "--master_port", str(master_port),
            *_rank_args(recipe_file, run_dir, extra))
    return LaunchPlan(argv, {"PYTHONUNBUFFERED": "1"}, run_dir / "logs" / "launcher.log")


def exported(environ: dict[str, str]) -> dict[str, str]:
    """The variables of `environ` the other nodes' ranks need (`EXPORTED_PREFIXES`,
    `EXPORTED_NAMES`), less those whose value DeepSpeed's runner cannot pass through a remote
    shell unchanged (a ``"``, ``$``, backquote, backslash or line break in it)."""
    return {k: environ[k] for k in sorted(environ)
            if (k in EXPORTED_NAMES or k.startswith(EXPORTED_PREFIXES))
            and not any(c in environ[k] for c in _UNSAFE)}


def env_file(environ: dict[str, str]) -> str:
    """The ``.deepspeed_env`` text: one ``KEY=value`` line per `exported` variable.

    DeepSpeed's runner splits every line at its first ``=`` (a line without
    one, a comment included, stops it with a ValueError), so there is nothing else.
    """
    return "".join(f"{k}={v}\n" for k, v in exported(environ).items())


def cluster_plan(hostfile: Path, launcher: str, recipe_file: Path, run_dir: Path, master_port: int,
                 environ: dict[str, str], master_addr: str | None = None, node_rank: int | None = None,
                 python: str = sys.executable, extra: tuple[str, ...] = ()) -> LaunchPlan:
    """The DeepSpeed runner over a hostfile: pdsh, OpenMPI, MVAPICH, or one node of a no-ssh job.

    With ``no_ssh`` every node runs this itself with its own ``node_rank``
    and the same ``master_addr`` and ``master_port``; its log is
    ``RUN_DIR/logs/launcher-node<N>.log``, else ``RUN_DIR/logs/launcher.log``.
    The variables the ranks need reach the other nodes through
    ``RUN_DIR/.deepspeed_env`` (`env_file`, named by ``DS_ENV_FILE``).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher {launcher!r}: one of {', '.join(LAUNCHERS)}")
    ds_env = run_dir / ".deepspeed_env"
    argv = [*_runner(python), "--hostfile", str(hostfile), "--master_port", str(master_port)]
    if master_addr:
        argv += ["--master_addr", master_addr]
    if launcher == "no_ssh":
        argv += ["--no_ssh", "--node_rank", str(node_rank or 0)]
    else:
        argv += ["--launcher", launcher]
    argv += _rank_args(recipe_file, run_dir, extra)
    log = run_dir / "logs" / (f"launcher-node{node_rank or 0}.log" if launcher == "no_ssh" else "launcher.log")
    return LaunchPlan(tuple(argv), {"PYTHONUNBUFFERED": "1", "DS_ENV_FILE": str(ds_env)}, log,
                      {ds_env: env_file(environ)})
