"""The Slurm batch script: its shape, the preemption path, and refusal of values sbatch misreads."""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from medtune.base import exitcodes
from medtune.launcher.slurm import SlurmError, SlurmJob, render

JOB = SlurmJob(job_name="medtuned", nodes=2, procs_per_node=8, gpus_per_node=8,
               recipe_file=Path("/runs/x/recipe.yaml"), run_dir=Path("/runs/x"), master_port=29500,
               partition="gpu", time="2-00:00:00", account="bio")


def test_per_rank_script_shape():
    text = render(JOB)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --requeue", "#SBATCH --signal=B:USR1@120", "#SBATCH --open-mode=append",
                 "#SBATCH --partition=gpu", "#SBATCH --time=2-00:00:00", "#SBATCH --account=bio",
                 "trap on_usr1 USR1", f'if [ "$code" -eq {exitcodes.PREEMPTED} ]; then',
                 'scontrol requeue "$SLURM_JOB_ID"'):
        assert line in text, line
    assert "-m medtune.engine.main --recipe /runs/x/recipe.yaml --run-dir /runs/x --resume auto" in text
    assert 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_per_node_script_runs_the_deepspeed_launcher_without_ssh():
    text = render(dataclasses.replace(JOB, tasks="per_node"))
    assert "#SBATCH --ntasks-per-node=1" in text
    # DeepSpeed's runner itself, once per node (not `medtune launch`, which would redo the preflight)
    assert "srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c" in text
    assert "-m deepspeed.launcher.runner" in text and '--no_ssh --node_rank "$SLURM_NODEID"' in text
    assert "medtune.cli" not in text
    assert "slots=8" in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_injection_in_a_job_name_stays_a_name():
    text = render(dataclasses.replace(JOB, job_name="x; touch /tmp/pwned $(reboot)"))
    assert "#SBATCH --job-name=x;_touch_/tmp/pwned_$(reboot)" in text
    body = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert not any("pwned" in ln for ln in body)


BAD = [
    (dict(job_name=""), "--job-name"),
    (dict(job_name="a\nb"), "--job-name"),
    (dict(partition="gpu a100"), "--partition 'gpu a100': must be one word"),
    (dict(account="a;b c"), "--account"),
    (dict(time="forever"), "--time 'forever'"),
    (dict(time="12:00 "), "--time"),
    (dict(nodes=0), "need at least 1 node"),
    (dict(gpus_per_node=4), "--gpus-per-node 4 but launch.procs=8"),
    (dict(tasks="per_gpu"), "launch.slurm_tasks 'per_gpu'"),
    (dict(grace_seconds=5), "grace 5s"),
    (dict(run_dir=Path("/runs/my run")), "--run-dir '/runs/my run'"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_values_are_one_line_errors(change, message):
    with pytest.raises(SlurmError) as err:
        render(dataclasses.replace(JOB, **change))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("run_dir", ["/runs/a.b", "/scratch/x+y/(run)[1]", "/r/^odd$"])
def test_usr1_reaches_this_runs_ranks_only(run_dir):
    """The preemption handler's ``pkill -f`` pattern matched every medtune rank on the node (another
    job's, or a test's, on a shared node got USR1 and checkpointed); now it names this run's
    --run-dir, matched as literal text (`grep -E` reads POSIX EREs as pkill does)."""
    from medtune.launcher.slurm import rank_pattern

    job = SlurmJob(job_name="j", nodes=1, procs_per_node=2, gpus_per_node=0, recipe_file=Path("/r/x.yaml"),
                   run_dir=Path(run_dir), master_port=None)
    pattern = rank_pattern(job)
    assert f"pkill -USR1 -f '{pattern}'" in render(job)
    rank = f"/usr/bin/python3 -u -m medtune.engine.main --recipe /r/x.yaml --run-dir {run_dir} --resume auto"
    ours = [rank, rank.replace(" -m medtune.engine.main ", " -m medtune.engine.main --local_rank=1 ")]
    others = [rank.replace(run_dir, run_dir + "2"), rank.replace(run_dir, run_dir.replace("/", "/x", 1)),
              rank.replace("medtune.engine.main", "medtune.engine.preflight"),
              "/usr/bin/python3 -u -m medtune.engine.main --recipe /r/x.yaml --run-dir /runs/other --resume auto"]
    got = subprocess.run(["grep", "-E", pattern], input="\n".join(ours + others) + "\n",
                         capture_output=True, text=True).stdout.splitlines()
    assert got == ours
