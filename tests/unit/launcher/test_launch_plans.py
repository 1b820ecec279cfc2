"""Every launch backend's `LaunchPlan`, built without launching anything.

The DeepSpeed runner's own argument parser reads every argv the plans build
(a plan the runner would misread fails here); the Slurm script is run by
bash against stand-in ``scontrol``/``srun``/``python`` commands; failure
diagnosis reads a log DeepSpeed 0.19's launcher really wrote.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from medtune import cli, config
from medtune.base.errors import UserError
from medtune.launcher import deepspeed, run, slurm
from medtune.launcher.diagnose import failed_rank
from medtune.launcher.plan import RANK_MODULE, LaunchPlan, describe, execute
from tests.conftest import RECIPES

runner = pytest.importorskip("deepspeed.launcher.runner")
RUN = Path("/runs/x")
RECIPE_FILE = RUN / "recipe.yaml"
RANK_ARGS = ["--recipe", str(RECIPE_FILE), "--run-dir", str(RUN), "--resume", "auto"]


def parsed(plan_argv) -> SimpleNamespace:
    """The DeepSpeed runner's reading of a plan's ``python -u -m deepspeed.launcher.runner ...``."""
    assert list(plan_argv[1:4]) == ["-u", "-m", "deepspeed.launcher.runner"]
    return runner.parse_args(list(plan_argv[4:]))


# ------------------------------------------------------------------ local (medtune train)

def test_local_plan_is_what_the_runner_reads():
    plan = deepspeed.local_plan(4, RECIPE_FILE, RUN, 29611, python="/py", extra=("--resume", "auto"))
    assert plan.argv[0] == "/py" and plan.kind == "ranks" and plan.files == {}
    assert plan.env == {"PYTHONUNBUFFERED": "1"} and plan.log == RUN / "logs" / "launcher.log"
    a = parsed(plan.argv)
    assert (a.num_gpus, a.master_port, a.module, a.user_script) == (4, 29611, True, RANK_MODULE)
    # DeepSpeed#1656/#191: a --master_port after the script reaches the script and 29500 is used
    assert a.user_args == RANK_ARGS and "--master_port" not in a.user_args


def test_train_plan_takes_the_recipes_port_or_a_free_one(monkeypatch, tmp_path):
    recipe = config.load(RECIPES / "demo.yaml", ["launch.procs=2", "launch.master_port=29123"])
    a = parsed(run.train_plan(recipe, tmp_path, "none", allow_changed=True).argv)
    assert (a.num_gpus, a.master_port) == (2, 29123)
    assert a.user_args[-3:] == ["--resume", "none", "--allow-changed"]
    monkeypatch.setattr(run, "free_port", lambda: 40001)
    free = config.load(RECIPES / "demo.yaml")
    assert parsed(run.train_plan(free, tmp_path).argv).master_port == 40001


def test_free_port_is_bindable():
    import socket

    port = run.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_run_directory_and_resume_flags(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    recipe = config.load(RECIPES / "demo.yaml")
    assert run.run_directory(None, recipe) == tmp_path / "runs" / "demo"
    assert run.run_directory("elsewhere/r1", recipe) == tmp_path / "elsewhere" / "r1"
    assert run.run_directory("/abs/r", recipe) == Path("/abs/r")
    assert run.resume_argv("auto", False) == ("--resume", "auto")
    assert run.resume_argv("/ck/step-3", True) == ("--resume", "/ck/step-3", "--allow-changed")


# ------------------------------------------------------------------ hostfile (medtune launch)

ENV = {"PATH": "/usr/bin", "NCCL_SOCKET_IFNAME": "ib0", "HOME": "/home/me", "WANDB_API_KEY": "k123",
       "HF_HOME": "/data/hf cache"}


@pytest.mark.parametrize("launcher", ["pdsh", "openmpi", "mvapich"])
def test_cluster_plans_name_their_launcher_and_pass_the_environment(launcher):
    plan = deepspeed.cluster_plan(Path("/h/hostfile"), launcher, RECIPE_FILE, RUN, 29700, ENV,
                                  master_addr="10.0.0.1", python="/py", extra=("--resume", "auto"))
    a = parsed(plan.argv)
    assert (a.hostfile, a.launcher, a.master_addr, a.master_port) == ("/h/hostfile", launcher, "10.0.0.1", 29700)
    assert (a.no_ssh, a.module, a.user_script, a.user_args) == (False, True, RANK_MODULE, RANK_ARGS)
    assert plan.env == {"PYTHONUNBUFFERED": "1", "DS_ENV_FILE": str(RUN / ".deepspeed_env")}
    assert plan.log == RUN / "logs" / "launcher.log"
    assert plan.files == {RUN / ".deepspeed_env": "HF_HOME=/data/hf cache\nNCCL_SOCKET_IFNAME=ib0\n"
                                                  "PATH=/usr/bin\nWANDB_API_KEY=k123\n"}


def test_no_ssh_plan_is_one_node_of_the_job():
    plan = deepspeed.cluster_plan(Path("/h/hostfile"), "no_ssh", RECIPE_FILE, RUN, 29700, ENV,
                                  master_addr="node01", node_rank=1, python="/py")
    a = parsed(plan.argv)
    assert (a.no_ssh, a.node_rank, a.master_addr, a.master_port) == (True, 1, "node01", 29700)
    assert "--launcher" not in plan.argv and plan.log == RUN / "logs" / "launcher-node1.log"
    with pytest.raises(ValueError, match="slurm"):
        deepspeed.cluster_plan(Path("/h"), "slurm", RECIPE_FILE, RUN, 1, {})


def _ds_export(line: str) -> str:
    """What DeepSpeed's runner makes of one .deepspeed_env line on a remote node's shell:
    runner.main splits it at '=', multinode_runner.add_export quotes it, pdsh runs ``export K=V``."""
    from deepspeed.launcher.multinode_runner import MultiNodeRunner

    holder = SimpleNamespace(exports={})
    key, val = line.split("=", maxsplit=1)
    MultiNodeRunner.add_export(holder, key, val)
    (k, v), = holder.exports.items()
    return subprocess.run(["bash", "-c", f"export {k}={v}; printf %s \"${k}\""], capture_output=True,
                          text=True, env={"PATH": os.environ["PATH"], "HOME": "/home/remote"}).stdout


def test_env_file_values_reach_the_remote_shell_unchanged():
    """Every line DeepSpeed's runner reads back from our .deepspeed_env gives the same value on the
    other node; values its quoting would change are left out (here: a ``$`` expanded remotely)."""
    environ = {"HF_HOME": "/data/hf cache", "NCCL_DEBUG_FILE": "/tmp/nccl.%h.%p", "MEDTUNE_X": "a,b:c=d",
               "TORCH_BAD": "$HOME/x", "HF_TOKEN": 'quo"te', "OMP_NUM_THREADS": "8",
               "WANDB_PROJECT": "med tune", "MLFLOW_TRACKING_URI": "http://m:5000", "SECRET": "no"}
    text = deepspeed.env_file(environ)
    lines = text.splitlines()
    assert all("=" in ln for ln in lines)  # the runner splits every line at '=': nothing else
    assert {ln.split("=", 1)[0] for ln in lines} == {"HF_HOME", "NCCL_DEBUG_FILE", "MEDTUNE_X",
                                                     "OMP_NUM_THREADS", "WANDB_PROJECT",
                                                     "MLFLOW_TRACKING_URI"}
    for ln in lines:
        assert _ds_export(ln) == ln.split("=", 1)[1], ln
    assert _ds_export("TORCH_BAD=$HOME/x") == "/home/remote/x"  # why such a value is left out


def _recipe(*overrides: str) -> config.Recipe:
    return config.load(RECIPES / "demo.yaml", list(overrides))


def _hostfile(tmp_path: Path, text: str = "me@node01 slots=2\nnode02 slots=2\n") -> Path:
    path = tmp_path / "hostfile"
    path.write_text(text)
    return path


def test_hostfile_plan_no_ssh_rendezvous_on_the_first_hosts_address(tmp_path):
    recipe = _recipe("launch.nodes=2", "launch.procs=2")
    plan, first = run.hostfile_plan(recipe, _hostfile(tmp_path), "no_ssh", tmp_path, ENV, master_port=29555,
                                    node_rank=1, resume="none")
    a = parsed(plan.argv)
    assert (a.master_addr, a.master_port, a.node_rank, first) == ("node01", 29555, 1, 2)
    assert a.user_args[-2:] == ["--resume", "none"] and a.hostfile == str(tmp_path / "hostfile")


def test_hostfile_plan_pdsh_leaves_the_address_to_deepspeed(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "free_port", lambda: 40002)
    plan, first = run.hostfile_plan(_recipe("launch.nodes=2", "launch.procs=2"), _hostfile(tmp_path),
                                    "pdsh", tmp_path, ENV)
    a = parsed(plan.argv)
    assert (a.master_addr, a.master_port, a.launcher, first) == ("", 40002, "pdsh", 0)


HOSTFILE_REFUSALS = [
    (dict(launcher="no_ssh", master_port=29555), "--launcher no_ssh needs --node-rank"),
    (dict(launcher="no_ssh", node_rank=0), "--launcher no_ssh needs --master-port"),
    # DeepSpeed's runner: `assert 0 <= node_rank < len(active_resources)`, a bare AssertionError
    (dict(launcher="no_ssh", node_rank=2, master_port=29555), "--node-rank 2: "),
    (dict(launcher="pdsh", node_rank=-1), "--node-rank -1: "),
]


@pytest.mark.parametrize("kw,message", HOSTFILE_REFUSALS, ids=[m for _, m in HOSTFILE_REFUSALS])
def test_hostfile_plan_refuses_in_one_line(tmp_path, kw, message):
    recipe = _recipe("launch.nodes=2", "launch.procs=2")
    launcher = kw.pop("launcher")
    with pytest.raises(UserError) as err:
        run.hostfile_plan(recipe, _hostfile(tmp_path), launcher, tmp_path, ENV, **kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_hostfile_slots_must_match_the_recipe(tmp_path):
    """axolotl/LLaMA-Factory users' 'world size 16 vs 8' (DeepSpeed#461 shape): slots != launch.procs."""
    with pytest.raises(UserError, match=r"node02 slots=4, but the recipe runs launch.procs=2"):
        run.hostfile_plan(_recipe("launch.nodes=2", "launch.procs=2"),
                          _hostfile(tmp_path, "node01 slots=2\nnode02 slots=4\n"), "pdsh", tmp_path, ENV)


def test_launch_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = cli.main(["launch", str(RECIPES / "demo.yaml"), "launch.nodes=2", "launch.procs=2",
                     "--hostfile", str(_hostfile(tmp_path)), "--launcher", "openmpi", "--master-port", "29801",
                     "--run-dir", str(run_dir), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and not run_dir.exists()
    first = out.splitlines()[0]
    assert first.startswith(f"DS_ENV_FILE={run_dir / '.deepspeed_env'} PYTHONUNBUFFERED=1 ")
    a = parsed(shlex.split(first)[2:])
    assert (a.launcher, a.master_port, a.user_args[:4]) == ("openmpi", 29801, ["--recipe", str(run_dir / "recipe.yaml"),
                                                                              "--run-dir", str(run_dir)])
    assert f"# {run_dir / '.deepspeed_env'} (written at launch):" in out


# ------------------------------------------------------------------ Slurm

JOB = slurm.SlurmJob(job_name="med tuned", nodes=2, procs_per_node=2, gpus_per_node=0,
                     recipe_file=RECIPE_FILE, run_dir=RUN, master_port=None, python="/py")


def test_slurm_plan_files_and_submission():
    script = RUN / "job.sbatch"
    written = slurm.plan(JOB, "name: x\n", script, submit=False)
    assert written.argv == () and written.kind == "sbatch"
    assert list(written.files) == [script, RECIPE_FILE] and written.files[RECIPE_FILE] == "name: x\n"
    assert written.files[script] == slurm.render(JOB) and written.dirs == (RUN / "logs",)
    submitted = slurm.plan(JOB, "name: x\n", script, submit=True)
    # the exact name on sbatch's own command line, no shell in between
    assert submitted.argv == ("sbatch", "--parsable", "--job-name=med tuned", str(script))
    assert describe(written).splitlines()[0] == "# nothing is run: the files below are only written"
    assert describe(submitted).splitlines()[:3] == [f"sbatch --parsable '--job-name=med tuned' {script}",
                                                    f"# mkdir -p {RUN / 'logs'}", f"# {script} (written at launch):"]


def test_slurm_plan_from_a_recipe_records_the_shape_and_the_recipe(tmp_path):
    recipe = _recipe("launch.nodes=3", "launch.procs=4", "launch.slurm_tasks=per_node")
    plan = run.slurm_plan(recipe, tmp_path, 4, partition="gpu", out=tmp_path / "elsewhere.sbatch", submit=True)
    script = plan.files[tmp_path / "elsewhere.sbatch"]
    for line in ("#SBATCH --job-name=demo", "#SBATCH --nodes=3", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --partition=gpu", "slots=4"):
        assert line in script, line
    assert "--world 12 --resume auto" in script
    (tmp_path / "back.yaml").write_text(plan.files[tmp_path / "recipe.yaml"])
    assert config.to_dict(config.load(tmp_path / "back.yaml")) == config.to_dict(recipe)


def test_per_node_step_is_one_deepspeed_runner_per_node_that_the_runner_reads():
    """srun + deepspeed on every rank's task starts ranks x ranks processes (DeepSpeedExamples#893)."""
    step = slurm.step_command(dataclasses.replace(JOB, tasks="per_node"))
    outer = shlex.split(step)
    assert outer[:4] == ["srun", "--kill-on-bad-exit=1", "--ntasks-per-node=1", "bash"] and outer[4] == "-c"
    values = {"$HOSTFILE": "/runs/x/hostfile.7", "$SLURM_NODEID": "1", "$MASTER_ADDR": "n1", "$MASTER_PORT": "15007"}
    inner = [values.get(t, t) for t in shlex.split(outer[5])]
    a = parsed(inner)
    assert (a.hostfile, a.no_ssh, a.node_rank, a.master_addr, a.master_port) == ("/runs/x/hostfile.7", True, 1,
                                                                                 "n1", 15007)
    assert (a.module, a.user_script, a.user_args) == (True, RANK_MODULE, RANK_ARGS)
    per_rank = shlex.split(slurm.step_command(JOB))
    assert per_rank[:2] == ["srun", "--kill-on-bad-exit=1"] and "deepspeed.launcher.runner" not in per_rank
    assert per_rank[2:] == ["/py", "-u", "-m", RANK_MODULE, *RANK_ARGS]


def _port(script: str, job_id: int) -> int:
    line = next(ln for ln in script.splitlines() if ln.startswith("export MASTER_PORT="))
    done = subprocess.run(["bash", "-c", f"SLURM_JOB_ID={job_id}; {line}; echo $MASTER_PORT"],
                          capture_output=True, text=True)
    return int(done.stdout)


def test_slurm_port_is_the_recipes_or_the_jobs_own():
    """Two jobs on one node both on 29500: 'Address already in use' (DeepSpeed#3916, #191)."""
    script = slurm.render(JOB)
    ports = {_port(script, j) for j in (4242, 4243, 104242)}
    assert len(ports) == 3 and all(15000 <= p < 30000 for p in ports)
    assert _port(script, 4242) == 15000 + 4242
    assert _port(slurm.render(dataclasses.replace(JOB, master_port=29123)), 4242) == 29123


FAKE_BIN = {
    "scontrol": '#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && echo n1 && exit 0\necho "scontrol $*" >> "$TRACE"\n',
    # srun: drop its own options, run the task once
    "srun": '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\necho "srun $*" >> "$TRACE"\nexec "$@"\n',
    "py": '#!/bin/bash\necho "py $*" >> "$TRACE"\n'
          'case "$*" in *medtune.engine.preflight*) exit "$PREFLIGHT_EXIT";; esac\nexit "$RANKS_EXIT"\n',
}


def _run_script(tmp_path: Path, preflight: int, ranks: int = 0) -> tuple[int, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in FAKE_BIN.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    job = dataclasses.replace(JOB, run_dir=tmp_path / "run", recipe_file=tmp_path / "run" / "recipe.yaml",
                              python=str(bin_dir / "py"))
    trace = tmp_path / f"trace-{preflight}-{ranks}"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TRACE": str(trace), "SLURM_JOB_ID": "77",
           "SLURM_JOB_NODELIST": "n1", "PREFLIGHT_EXIT": str(preflight), "RANKS_EXIT": str(ranks)}
    done = subprocess.run(["bash", "-c", slurm.render(job)], env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, trace.read_text().splitlines() if trace.exists() else []


def test_slurm_script_runs_the_preflight_once_then_the_ranks(tmp_path):
    code, trace = _run_script(tmp_path, preflight=0)
    assert code == 0
    assert [t.split()[:4] for t in trace] == [["py", "-u", "-m", "medtune.engine.preflight"],
                                              ["srun", str(tmp_path / "bin" / "py"), "-u", "-m"],
                                              ["py", "-u", "-m", RANK_MODULE]]
    assert trace[0].endswith("--world 4 --resume auto")


@pytest.mark.parametrize("preflight,ranks,want,requeued", [(3, 0, 0, False), (2, 0, 2, False), (1, 0, 1, False),
                                                          (0, 75, 0, True), (0, 65, 65, False)])
def test_slurm_script_acts_on_the_exit_codes(tmp_path, preflight, ranks, want, requeued):
    """3 = finished: no srun, exit 0; 2 = user error: exit 2; 75 from the ranks: requeue."""
    code, trace = _run_script(tmp_path, preflight, ranks)
    assert code == want
    assert any(t.startswith("srun") for t in trace) == (preflight == 0)
    assert ("scontrol requeue 77" in trace) == requeued


def test_slurm_dry_run_prints_the_script_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = cli.main(["slurm", str(RECIPES / "demo.yaml"), "--nodes", "2", "--gpus-per-node", "0",
                     "--run-dir", str(run_dir), "--submit", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and not run_dir.exists()
    assert out.splitlines()[0] == f"sbatch --parsable --job-name=demo {run_dir / 'job.sbatch'}"
    assert f"# {run_dir / 'job.sbatch'} (written at launch):\n#!/bin/bash\n" in out
    assert f"# {run_dir / 'recipe.yaml'} (written at launch):\nname: demo\n" in out


def _fake_sbatch(tmp_path: Path, body: str, monkeypatch) -> None:
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.parent.mkdir(exist_ok=True)
    sbatch.write_text("#!/bin/bash\n" + body)
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{sbatch.parent}:{os.environ['PATH']}")


def test_execute_writes_then_submits(tmp_path, monkeypatch, capsys):
    _fake_sbatch(tmp_path, 'echo "$@" > "$(dirname "$0")/args"; echo "4242;cluster"\n', monkeypatch)
    job = dataclasses.replace(JOB, run_dir=tmp_path / "run", recipe_file=tmp_path / "run" / "recipe.yaml")
    script = tmp_path / "run" / "job.sbatch"
    assert execute(slurm.plan(job, "name: x\n", script, submit=True)) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {script}", f"wrote {job.recipe_file}",
                                                    "submitted job 4242"]
    assert (tmp_path / "run" / "logs").is_dir() and job.recipe_file.read_text() == "name: x\n"
    assert (tmp_path / "bin" / "args").read_text() == f"--parsable --job-name=med tuned {script}\n"


def test_a_refused_submission_is_one_user_error(tmp_path, monkeypatch):
    _fake_sbatch(tmp_path, 'echo "sbatch: error: invalid partition specified: gpu" >&2; exit 1\n', monkeypatch)
    job = dataclasses.replace(JOB, run_dir=tmp_path / "run", recipe_file=tmp_path / "run" / "recipe.yaml")
    with pytest.raises(UserError, match=r"failed: sbatch: error: invalid partition specified: gpu$"):
        execute(slurm.plan(job, "name: x\n", tmp_path / "run" / "job.sbatch", submit=True))


def test_execute_runs_a_ranks_plan_with_its_environment(tmp_path, capfd):
    plan = LaunchPlan((sys.executable, "-c", "import os; print(os.environ['MEDTUNE_PLAN_TEST'])"),
                      {"MEDTUNE_PLAN_TEST": "yes"}, tmp_path / "logs" / "l.log", {tmp_path / "f": "text\n"})
    assert execute(plan) == 0
    assert capfd.readouterr().out == "yes\n" and (tmp_path / "logs" / "l.log").read_text() == "yes\n"
    assert (tmp_path / "f").read_text() == "text\n"


# ------------------------------------------------------------------ failure diagnosis

# Written by DeepSpeed 0.19.8's deepspeed.launcher.launch with two local ranks, rank 0 killing
# itself with SIGKILL (paths shortened). Its last line names --local_rank=1: the argv logged is the
# last rank spawned, whichever failed.
TWO_RANKS_LOG = """\
[2026-11-30 18:49:15,575] [INFO] [launch.py:152:main] WORLD INFO DICT: {'localhost': [0, 1]}
[2026-11-30 18:49:15,575] [INFO] [launch.py:158:main] nnodes=1, num_local_procs=2, node_rank=0
[2026-11-30 18:49:15,575] [INFO] [launch.py:170:main] dist_world_size=2
[2026-11-30 18:49:15,592] [INFO] [launch.py:245:main] process 2459 spawned with command: ['/py', '-u', '-m', 'medtune.engine.main', '--local_rank=0', '--recipe', 'x']
[2026-11-30 18:49:15,624] [INFO] [launch.py:245:main] process 2460 spawned with command: ['/py', '-u', '-m', 'medtune.engine.main', '--local_rank=1', '--recipe', 'x']
[2026-11-30 18:49:16,628] [INFO] [launch.py:253:sigkill_handler] Killing subprocess 2459
[2026-11-30 18:49:16,629] [INFO] [launch.py:253:sigkill_handler] Killing subprocess 2460
[2026-11-30 18:49:16,636] [ERROR] [launch.py:259:sigkill_handler] ['/py', '-u', '-m', 'medtune.engine.main', '--local_rank=1', '--recipe', 'x'] exits with return code = -9
"""


def _one_rank_log(code: int) -> str:
    return (TWO_RANKS_LOG.replace("{'localhost': [0, 1]}", "{'node-b': [0]}")
            .replace("--local_rank=1", "--local_rank=0").replace("= -9", f"= {code}"))


def test_failed_rank_names_the_rank_when_the_node_runs_one(tmp_path):
    log = tmp_path / "launcher-node1.log"
    log.write_text(_one_rank_log(-9))
    assert failed_rank(log, first_rank=1) == "rank 1 was killed by SIGKILL"
    log.write_text(_one_rank_log(1))
    assert failed_rank(log) == "rank 0 exited with code 1"


def test_failed_rank_does_not_name_the_wrong_rank_of_several(tmp_path):
    log = tmp_path / "launcher.log"
    log.write_text(TWO_RANKS_LOG)
    assert failed_rank(log, first_rank=4) == "one of ranks 4-5 was killed by SIGKILL"


def test_failed_rank_reads_the_newest_start_of_an_appended_log(tmp_path):
    log = tmp_path / "launcher.log"
    log.write_text(TWO_RANKS_LOG + _one_rank_log(-15))  # a 2-rank start failed, then a 1-rank start
    assert failed_rank(log) == "rank 0 was killed by SIGTERM"


def test_failed_rank_without_a_failure(tmp_path):
    log = tmp_path / "launcher.log"
    log.write_text(TWO_RANKS_LOG.rsplit("\n", 2)[0] + "\n")
    assert failed_rank(log) is None
    assert failed_rank(tmp_path / "absent.log") is None and failed_rank(None) is None


def test_a_bad_slurm_value_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = cli.main(["slurm", str(RECIPES / "demo.yaml"), "--nodes", "1", "--gpus-per-node", "0",
                     "--run-dir", str(run_dir), "--time", "forever", "--submit"])
    err = capsys.readouterr().err
    assert code == 2 and not run_dir.exists()
    assert err == "medtune: error: --time 'forever': use Slurm's [D-]HH:MM:SS, MM:SS or minutes\n"
