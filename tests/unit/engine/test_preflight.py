"""The launcher's preflight and its run plan, without ranks: what it decides once, and what a rank
refuses to start from."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medtune import config
from medtune.base.errors import UserError
from medtune.engine import preflight as pf
from medtune.engine import resume
from medtune.engine.checkpoint import MARKER, ResumeError, mark_finished
from tests.conftest import RECIPES

REPO = Path(__file__).resolve().parents[3]
DEMO = RECIPES / "demo.yaml"  # 2 ranks, train.grad_accum 2


def _command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medtune.engine.preflight", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def _fake_checkpoint(run: Path, state: dict, step: int) -> Path:
    """A complete checkpoint as the trainer leaves it, as far as the (torch-free) resume policy reads it."""
    ckpt = run / "checkpoints" / f"step-{step:08d}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({**state, "global_step": step}))
    (ckpt / MARKER).write_text("")
    return ckpt


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """The demo planned for 2 ranks by the command the Slurm batch script's first step runs."""
    run = tmp_path_factory.mktemp("pf") / "run"
    done = _command("--recipe", str(DEMO), "--run-dir", str(run), "--world", "2")
    assert done.returncode == 0, done.stderr
    return run, done.stderr


def test_the_command_writes_one_plan_with_one_batch_shape(planned):
    run, said = planned
    plan = json.loads((run / pf.PLAN).read_text())
    assert (plan["world"], plan["grad_accum"], plan["micro_batch"], plan["global_batch"]) == (2, 2, 1, 4)
    assert plan["state"]["packs_per_step"] == 4 and plan["state"]["world"] == 2
    assert plan["start"] is None and plan["universal"] is None and plan["newest_checkpoint"] is None
    assert plan["recipe_file"] == str(run / "recipe.yaml")
    assert plan["recipe_digest"] == hashlib.sha256((run / "recipe.yaml").read_bytes()).hexdigest()
    assert (Path(plan["data_path"]) / "stats.json").is_file()
    assert Path(plan["data_path"]).name == plan["data_fingerprint"]
    assert plan["zero"]["hpz"] == 1 and plan["zero"]["world"] == 2
    assert f"run plan: {run / pf.PLAN} (2 ranks x 2 accumulation = 4 packs per step; fresh start)" in said


def test_a_rank_reads_the_plan_and_the_data_it_names(planned):
    run, _ = planned
    plan = pf.read(run, str(run / "recipe.yaml"), 2)
    assert pf.recipe_of(plan) == config.load(DEMO)  # the resolved recipe, schema only
    train, held = pf.open_data(plan)  # the demo's 360 samples, 5% held out (data.validation)
    assert (len(train), len(held)) == (342, 18)


def test_a_rank_refuses_a_plan_that_is_not_its_runs(planned, tmp_path):
    run, _ = planned
    recipe = str(run / "recipe.yaml")
    with pytest.raises(UserError, match=r"planned for 2 ranks, but 4 started; run `python -m medtune"
                                        r".engine.preflight --recipe .* --world 4 --resume auto` first"):
        pf.read(run, recipe, 4)
    with pytest.raises(UserError, match=r"planned for the recipe .*recipe.yaml \(sha256 \w{12}\), but the "
                                        r"ranks read .*demo.yaml"):
        pf.read(run, str(DEMO), 2)
    with pytest.raises(UserError, match=r"run_plan.json: no run plan: the ranks start from one"):
        pf.read(tmp_path, recipe, 2)


def test_a_stale_plan_is_refused(planned, tmp_path):
    """A requeued job whose ranks start without planning again must not start fresh over a checkpoint."""
    run, _ = planned
    copy = tmp_path / "run"
    copy.mkdir()
    for name in (pf.PLAN, "recipe.yaml"):
        (copy / name).write_bytes((run / name).read_bytes())
    plan = json.loads((copy / pf.PLAN).read_text())
    plan["recipe_file"] = str(copy / "recipe.yaml")
    (copy / pf.PLAN).write_text(json.dumps(plan))
    pf.read(copy, str(copy / "recipe.yaml"), 2)
    _fake_checkpoint(copy, plan["state"], 3)
    with pytest.raises(UserError, match="stale: planned when the newest checkpoint was None, now it is "
                                        "step-00000003"):
        pf.read(copy, str(copy / "recipe.yaml"), 2)


def test_missing_prepared_data_is_one_line_not_a_rank_preparing_it(planned):
    """LLaMA-Factory#2424 / axolotl#921: ranks that tokenize (again) at start-up hit the collective
    timeout; here a rank never prepares: a cleared cache is one line telling to run the launcher."""
    run, _ = planned
    plan = pf.read(run, str(run / "recipe.yaml"), 2)
    gone = pf.RunPlan(**{**plan.__dict__, "data_path": str(run / "nowhere")})
    with pytest.raises(UserError, match=r"nowhere: the prepared data the run plan names is missing .*; "
                                        r"rerun the launcher"):
        pf.open_data(gone)


def test_a_finished_run_exits_3_and_a_changed_one_2(planned, tmp_path):
    run, _ = planned
    state = json.loads((run / pf.PLAN).read_text())["state"]
    done = tmp_path / "done"
    done.mkdir()
    ckpt = _fake_checkpoint(done, state, 45)
    mark_finished(done, ckpt, 45, None)
    got = _command("--recipe", str(DEMO), "--run-dir", str(done), "--world", "2")
    assert got.returncode == pf.NOTHING_TO_DO == 3, got.stderr
    assert f"{done} is complete: trained to step 45 (checkpoint step-00000045); nothing to do" in got.stderr
    assert not (done / pf.PLAN).exists()
    got = _command("--recipe", str(DEMO), "--run-dir", str(done), "--world", "2", "--resume", "never")
    errors = [line for line in got.stderr.splitlines() if line.startswith("medtune: error")]
    assert got.returncode == 2 and len(errors) == 1, got.stderr  # beside the data's own log lines
    assert "medtune: error: --resume never: " in got.stderr and "would overwrite" in got.stderr


def test_a_bad_recipe_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: [{DEMO}]\ntrain:\n  grad_accum: 0\n")
    got = _command("--recipe", str(bad), "--run-dir", str(tmp_path / "run"), "--world", "2")
    assert got.returncode == 2, got.stderr
    assert got.stderr.startswith(f"medtune: error: {bad}: train.grad_accum") and got.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_resume_on_one_rank_keeps_the_checkpoints_global_batch(planned, tmp_path, monkeypatch):
    """transformers#43708: a resume with another per-device batch / accumulation recomputed the batch
    (and max_steps) from the new arguments. Here the plan holds the one batch shape in force: the
    checkpoint's 4 packs per step, on 1 rank 4 accumulation steps, whatever the recipe now says, and
    the DeepSpeed config is built from it."""
    from medtune.engine.zero import build_config

    run, _ = planned
    state = json.loads((run / pf.PLAN).read_text())["state"]  # written by 2 ranks x 2
    ckpt = _fake_checkpoint(tmp_path / "run", state, 10)
    monkeypatch.setattr(resume, "to_universal", lambda c: c.parent / "universal" / c.name)
    recipe = config.load(DEMO, ["train.grad_accum=8"])
    plan = pf.preflight(recipe, str(DEMO), tmp_path / "run", 1, allow_changed=True, say=lambda m: None)
    assert (plan.world, plan.grad_accum, plan.global_batch) == (1, 4, 4)
    assert plan.start == str(ckpt) and plan.universal == str(ckpt.parent / "universal" / ckpt.name)
    ds = build_config(pf.recipe_of(plan), plan.world, 64, False, grad_accum=plan.grad_accum)
    assert (ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (4, 4)
    with pytest.raises(ResumeError, match="4 packs, which 3 ranks cannot share evenly"):
        pf.preflight(recipe, str(DEMO), tmp_path / "run", 3, allow_changed=True, say=lambda m: None)


def test_preflight_and_the_resume_policy_import_no_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, medtune.engine.preflight, medtune.engine.resume, "
                           "medtune.engine.checkpoint; print(sorted(m for m in ('torch', 'deepspeed') "
                           "if m in sys.modules))"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "[]", done.stderr
