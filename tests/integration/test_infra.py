"""The real infrastructure the launch tests stand on, each piece on its own (see infra.py)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration.infra import LoopbackSSH, OpenMPI, SlurmCluster, free_port


def write_script(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


def test_slurm_two_task_srun_inside_sbatch(slurm_cluster: SlurmCluster, tmp_path):
    script = write_script(tmp_path / "two.sbatch", """
        #!/bin/bash
        #SBATCH --job-name=two-tasks
        #SBATCH --nodes=1
        #SBATCH --ntasks=2
        #SBATCH --time=2
        srun bash -c 'echo "task procid=$SLURM_PROCID ntasks=$SLURM_NTASKS localid=$SLURM_LOCALID"'
        """)
    job = slurm_cluster.submit(script)
    info = slurm_cluster.wait_state(job, "COMPLETED", timeout=45)
    assert info["ExitCode"] == "0:0"
    lines = [ln for ln in slurm_cluster.stdout_path(job).read_text().splitlines()
             if ln.startswith("task ")]
    assert sorted(lines) == ["task procid=0 ntasks=2 localid=0", "task procid=1 ntasks=2 localid=1"]


def test_slurm_preempt_requeue_release_resume(slurm_cluster: SlurmCluster, tmp_path):
    """USR1 to the batch shell -> it requeues itself -> PENDING (BeginTime) -> released -> resumes."""
    script = write_script(tmp_path / "requeue.sbatch", """
        #!/bin/bash
        #SBATCH --job-name=requeue
        #SBATCH --ntasks=1
        #SBATCH --time=5
        #SBATCH --requeue
        #SBATCH --signal=B:USR1@30
        #SBATCH --open-mode=append
        restarts=${SLURM_RESTART_COUNT:-0}
        echo "start restart_count=$restarts"
        if [ "$restarts" -ge 1 ]; then echo "resumed from $(cat state)"; exit 0; fi
        on_usr1() {
            echo "got USR1"
            echo "saved-step-7" > state
            scontrol requeue "$SLURM_JOB_ID"
            kill "$sleeper" 2>/dev/null
            exit 0
        }
        trap on_usr1 USR1
        sleep 300 & sleeper=$!
        echo "waiting"
        wait
        """)
    job = slurm_cluster.submit(script, cwd=tmp_path)
    out = slurm_cluster.stdout_path(job)
    slurm_cluster.wait_state(job, "RUNNING", timeout=30)
    deadline = time.monotonic() + 30
    while "waiting" not in (out.read_text() if out.exists() else ""):  # the trap is set
        assert time.monotonic() < deadline, slurm_cluster.diagnostics(job)
        time.sleep(0.2)

    slurm_cluster.signal_batch(job, "USR1")
    info = slurm_cluster.wait_state(job, "PENDING", timeout=30)
    assert info["Reason"] == "BeginTime", info
    slurm_cluster.release(job)
    info = slurm_cluster.wait_state(job, "COMPLETED", timeout=45)
    assert info["Restarts"] == "1"
    text = out.read_text()
    # slurmstepd may add its own "CANCELLED ... DUE TO JOB REQUEUE" line, depending on timing
    assert [ln for ln in text.splitlines() if not ln.startswith("slurmstepd")] == ["start restart_count=0", "waiting", "got USR1",
                                 "start restart_count=1", "resumed from saved-step-7"], text


def test_mpirun_two_ranks(openmpi: OpenMPI):
    code = "import os; print('rank', os.environ['OMPI_COMM_WORLD_RANK'], os.environ['OMPI_COMM_WORLD_SIZE'])"
    proc = subprocess.run(openmpi.command(2, sys.executable, "-c", code), capture_output=True,
                          text=True, timeout=45, env=openmpi.environ())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(ln for ln in proc.stdout.splitlines() if ln.startswith("rank")) == \
        ["rank 0 2", "rank 1 2"], proc.stdout + proc.stderr


def test_pdsh_over_loopback_sshd(loopback_sshd: LoopbackSSH):
    proc = loopback_sshd.pdsh("hostname")
    assert proc.returncode == 0, proc.stderr
    hosts = sorted(ln.split(":", 1)[0] for ln in proc.stdout.splitlines())
    assert hosts == ["node-a", "node-b"], proc.stdout + proc.stderr


def test_deepspeed_style_pdsh(loopback_sshd: LoopbackSSH):
    """What DeepSpeed's PDSHRunner runs (rank from pdsh's %n), and its plain-ssh reachability check."""
    env = loopback_sshd.environ()
    check = subprocess.run(["ssh", "-o", "PasswordAuthentication=no", "node-a", "hostname"],
                           capture_output=True, text=True, timeout=30, env=env)
    assert check.returncode == 0, check.stderr
    proc = subprocess.run(["pdsh", "-S", "-f", "1024", "-w", "node-a,node-b",
                           "export FOO=bar; cd /tmp; echo node_rank=%n foo=$FOO"],
                          capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(proc.stdout.splitlines()) == ["node-a: node_rank=0 foo=bar",
                                                "node-b: node_rank=1 foo=bar"], proc.stdout


def test_deepspeed_runner_over_pdsh(loopback_sshd: LoopbackSSH, tmp_path):
    """The real `deepspeed --launcher pdsh` over two aliases: both ranks start with their RANK."""
    (tmp_path / "hostfile").write_text("node-a slots=1\nnode-b slots=1\n")
    (tmp_path / "rank.py").write_text(
        "import os\nprint('rank', os.environ['RANK'], os.environ['WORLD_SIZE'], flush=True)\n")
    pytest.importorskip("deepspeed")
    proc = subprocess.run([sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(tmp_path / "hostfile"), "--launcher", "pdsh",
                           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                           str(tmp_path / "rank.py")],
                          capture_output=True, text=True, timeout=50, cwd=tmp_path,
                          env=loopback_sshd.environ())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = sorted(ln.split(": ", 1)[1] for ln in proc.stdout.splitlines() if ": rank " in ln)
    assert ranks == ["rank 0 2", "rank 1 2"], proc.stdout[-3000:] + proc.stderr[-3000:]
