"""Launching for real: Slurm (submit and preemption), mpirun, two no-ssh "nodes", pdsh over ssh.

Every run trains the same tiny recipe; where the world size matches, the
result must be bit-identical to `medtune train` on this machine.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.integration.helpers import BASELINE_STEPS, load_weights, medtune, metrics, write_recipe
from tests.integration.infra import free_port

STEPS = BASELINE_STEPS


@pytest.fixture(scope="module")
def recipe(baseline_recipe, tmp_path_factory) -> Path:
    """The shared baseline's recipe; a 1-minute collective timeout only ends a hung launch sooner."""
    return write_recipe(tmp_path_factory.mktemp("launch") / "tiny.yaml", {
        "base": str(baseline_recipe), "launch": {"timeout_minutes": 1.0}})


@pytest.fixture
def baseline(baseline_run) -> Path:
    """`medtune train` of the same recipe on this machine (the shared baseline run, read-only)."""
    return baseline_run


def assert_identical(run: Path, baseline: Path) -> None:
    got, want = load_weights(run / "export"), load_weights(baseline / "export")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert [m["train/loss"] for m in metrics(run) if "train/loss" in m] == [m["train/loss"] for m in metrics(baseline) if "train/loss" in m]


def test_slurm_submit_runs_to_a_loadable_export(slurm_cluster, recipe, baseline, tmp_path):
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    out = medtune("slurm", str(recipe), "--nodes", "1", "--gpus-per-node", "0", "--run-dir", str(run),
                  "--job-name", "x; touch /tmp/pwned", "--submit", env_extra=slurm_cluster.env)
    job = int(out.stdout.split("submitted job ")[1].split()[0])
    slurm_cluster.wait_state(job, "COMPLETED", timeout=300)
    assert not Path("/tmp/pwned").exists(), "a job name was run as a command"
    shown = slurm_cluster.run("scontrol", "show", "job", str(job)).stdout.splitlines()[0]
    assert shown.endswith("JobName=x; touch /tmp/pwned"), shown
    AutoModelForCausalLM.from_pretrained(run / "export")
    assert_identical(run, baseline)


def test_slurm_preemption_checkpoints_requeues_and_resumes_identically(slurm_cluster, recipe,
                                                                       baseline, tmp_path):
    run = tmp_path / "run"
    out = medtune("slurm", str(recipe), "--nodes", "1", "--gpus-per-node", "0", "--run-dir", str(run),
                  "--submit", env_extra=slurm_cluster.env)
    job = int(out.stdout.split("submitted job ")[1].split()[0])
    end = time.time() + 300
    while not ((run / "metrics.jsonl").exists() and len(metrics(run)) >= 2):
        assert time.time() < end, slurm_cluster.diagnostics(job)
        time.sleep(0.1)
    slurm_cluster.signal_batch(job, "USR1")
    slurm_cluster.wait_state(job, "PENDING", timeout=120)
    # The requeued job gets its ~165 s hold (Reason=BeginTime) a moment after it turns
    # PENDING; released before the node has cleaned up the first run, slurmd refuses it
    # ("Job credential revoked"), so wait for both, then release it.
    end = time.time() + 60
    while (slurm_cluster.job_info(job).get("Reason") != "BeginTime"
           or "idle" not in slurm_cluster.node_state()) and time.time() < end:
        time.sleep(0.5)
    time.sleep(2)
    slurm_cluster.release(job)
    info = slurm_cluster.wait_state(job, "COMPLETED", timeout=300)
    assert info["Restarts"] == "1"
    log = slurm_cluster.stdout_path(job).read_text() if slurm_cluster.stdout_path(job).exists() else ""
    log += "".join(p.read_text() for p in (run / "logs").glob("slurm-*.out"))
    assert "requeueing job" in log and "resuming from" in log
    assert_identical(run, baseline)


def test_slurm_per_node_runs_deepspeeds_runner_once_per_node(slurm_cluster, recipe, baseline, tmp_path):
    """``launch.slurm_tasks=per_node``: one srun task per node running DeepSpeed's runner with
    --no_ssh (not one per rank: DeepSpeedExamples#893's ranks x ranks processes), after the preflight."""
    run = tmp_path / "run"
    out = medtune("slurm", str(recipe), "launch.slurm_tasks=per_node", "--nodes", "1", "--gpus-per-node", "0",
                  "--run-dir", str(run), "--submit", env_extra=slurm_cluster.env)
    job = int(out.stdout.split("submitted job ")[1].split()[0])
    slurm_cluster.wait_state(job, "COMPLETED", timeout=300)
    log = "".join(p.read_text() for p in (run / "logs").glob("slurm-*.out"))
    assert log.count("dist_world_size=2") == 1, log[-3000:]
    got, want = metrics(run), metrics(baseline)
    assert len(got) == STEPS
    assert all(abs(g["train/loss"] - w["train/loss"]) <= 1e-4 * w["train/loss"] for g, w in zip(got, want))


def test_mpirun_discovers_ranks_from_the_mpi_environment(openmpi, recipe, baseline, tmp_path):
    run = tmp_path / "run"
    # MPI's first process plans the run once (the command a Slurm or MPI job's first step runs)
    planned = subprocess.run([sys.executable, "-m", "medtune.engine.preflight", "--recipe", str(recipe),
                              "--run-dir", str(run), "--world", "2"], capture_output=True, text=True,
                             timeout=600)
    assert planned.returncode == 0, planned.stderr[-3000:]
    cmd = openmpi.command(2, sys.executable, "-m", "medtune.engine.main", "--recipe", str(run / "recipe.yaml"),
                          "--run-dir", str(run))
    done = subprocess.run(cmd, env=openmpi.environ(MASTER_PORT=str(free_port())), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_identical(run, baseline)


def _two_nodes(recipe: Path, run: Path, port: int, *extra: str) -> list[subprocess.Popen]:
    hostfile = run.parent / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")
    return [subprocess.Popen([sys.executable, "-m", "medtune.cli", "launch", str(recipe), "launch.nodes=2",
                              "launch.procs=1", "--hostfile", str(hostfile),
                              "--launcher", "no_ssh", "--node-rank", str(r), "--master-addr", "127.0.0.1",
                              "--master-port", str(port), "--run-dir", str(run), *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for r in (0, 1)]


def test_two_no_ssh_nodes_form_one_job(recipe, baseline, tmp_path):
    run = tmp_path / "run"
    procs = _two_nodes(recipe, run, free_port())
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "dist_world_size=2" in (run / "logs" / "launcher-node1.log").read_text()
    # 2 nodes x 1 rank: the baseline's world and batch; threads per rank differ, so 1e-4
    got, want = metrics(run), metrics(baseline)
    assert len(got) == STEPS
    assert all(abs(g["train/loss"] - w["train/loss"]) <= 1e-4 * w["train/loss"] for g, w in zip(got, want))


def test_killed_rank_ends_the_job_within_the_timeout_and_is_named(recipe, tmp_path):
    run = tmp_path / "run"
    procs = _two_nodes(recipe, run, free_port(), "train.max_steps=200", "launch.timeout_minutes=1")
    end = time.time() + 300
    while not ((run / "metrics.jsonl").exists() and len(metrics(run)) >= 2):
        ended = [p for p in procs if p.poll() is not None]
        assert time.time() < end and not ended, ended and ended[0].communicate()[0][-3000:]
        time.sleep(0.1)
    victim = _rank_pids(procs[1].pid)
    assert victim, "no rank process found under node 1"
    killed = time.time()
    os.kill(victim[0], signal.SIGKILL)
    outs = [p.communicate(timeout=120)[0] for p in procs]
    took = time.time() - killed
    assert all(p.returncode not in (0, None) for p in procs), [p.returncode for p in procs]
    assert took <= 60 + 20, f"the job took {took:.0f}s to end after a rank died"
    assert "rank 1 was killed by SIGKILL" in outs[1], outs[1][-2000:]


def _rank_pids(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children(recursive=True)
            if "medtune.engine.main" in c.cmdline() and "-m" in c.cmdline()
            and c.cmdline()[c.cmdline().index("-m") + 1] == "medtune.engine.main"]


def test_pdsh_over_ssh_to_two_host_aliases(loopback_sshd, recipe, baseline, tmp_path):
    run = tmp_path / "run"
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")
    args = ("launch", str(recipe), "launch.nodes=2", "launch.procs=1",
            "--hostfile", str(hostfile), "--launcher", "pdsh", "--master-addr", "127.0.0.1",
            "--master-port", str(free_port()), "--run-dir", str(run))
    dry = medtune(*args, "--dry-run", env_extra=loopback_sshd.env).stdout
    assert not run.exists(), "--dry-run changed something"
    out = medtune(*args, env_extra=loopback_sshd.env)
    # what DeepSpeed's runner actually ran is what the dry run announced
    runner_cmd = dry.splitlines()[0].split(" ", 2)[2]
    assert runner_cmd in out.stderr
    launched = (run / "logs" / "launcher.log").read_text()
    assert "pdsh -S -f 1024 -w node-a,node-b" in launched
    got, want = metrics(run), metrics(baseline)
    assert all(abs(g["train/loss"] - w["train/loss"]) <= 1e-4 * w["train/loss"] for g, w in zip(got, want))


def test_doctor_reports_this_node_and_unreachable_hosts(loopback_sshd, tmp_path):
    plain = medtune("doctor")
    assert "deepspeed" in plain.stdout and "PROBLEM" not in plain.stdout
    good = tmp_path / "good"
    good.write_text("node-a slots=1\nnode-b slots=1\n")
    out = medtune("doctor", "--hostfile", str(good), env_extra=loopback_sshd.env)
    assert out.stdout.count("reachable") == 2
    bad = tmp_path / "bad"
    bad.write_text("node-a slots=1\nno-such-host.invalid slots=1\n")
    out = medtune("doctor", "--hostfile", str(bad), env_extra=loopback_sshd.env, check=False)
    assert out.returncode == 1 and "PROBLEM ssh no-such-host.invalid" in out.stdout
