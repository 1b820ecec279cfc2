"""Resume for real: 2-rank ZeRO-3 runs killed, signalled, held mid-save and resumed on 1, 2 or 4 ranks.

Every interrupted run is compared with one uninterrupted run of the same
recipe: same world size means bit-identical weights and per-step losses;
another world size (the global batch is kept) means losses within 1e-4 and
the same samples in the same steps.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medtune.base import exitcodes
from medtune.engine.checkpoint import MARKER, latest
from tests import hooks
from tests.conftest import RECIPES, REPO
from tests.integration.helpers import (BASELINE_SAVE_EVERY, BASELINE_STEPS, assert_same_run, load_weights,
                                       medtune, metrics, save_tiny_model, write_recipe)

STEPS, SAVE_EVERY = BASELINE_STEPS, BASELINE_SAVE_EVERY


@pytest.fixture
def recipe(baseline_recipe) -> Path:
    """The shared baseline's recipe (tests/integration/conftest.py)."""
    return baseline_recipe


@pytest.fixture
def baseline(baseline_run) -> Path:
    """The uninterrupted run of `recipe` every interrupted one is compared with (shared, read-only)."""
    return baseline_run


def start(recipe: Path, run: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "medtune.cli", "train", str(recipe), "--run-dir",
                             str(run), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env={**os.environ, **(env or {})})


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> int:
    """Block until the run has logged `step`; return the last step logged."""
    end = time.time() + timeout
    while time.time() < end:
        f = run / "metrics.jsonl"
        done = len(f.read_text().splitlines()) if f.exists() else 0
        if done >= step:
            return done
        assert proc.poll() is None, f"run ended early:\n{proc.stdout.read()[-4000:]}"
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached")


def test_sigkill_then_resume_auto_is_bit_identical(recipe, baseline, tmp_path):
    run = tmp_path / "run"
    proc = start(recipe, run)
    kill_at = random.Random(os.getpid()).randint(SAVE_EVERY + 1, STEPS - 2)
    wait_for_step(run, kill_at, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest(run) is not None
    saved = latest(run)
    out = medtune("train", str(recipe), "--run-dir", str(run))  # --resume auto is the default
    assert f"resuming from {saved} at step {int(saved.name[5:])}" in out.stderr
    assert_same_run(run, baseline)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_checkpoints_the_current_step_and_exits_75(recipe, baseline, tmp_path, signum):
    run = tmp_path / "run"
    proc = start(recipe, run)
    sent_at = wait_for_step(run, 6, proc)
    proc.send_signal(signum)  # to `medtune train`, as Slurm or a user would
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == exitcodes.PREEMPTED, out[-3000:]
    last = len(metrics(run))
    assert sent_at <= last < STEPS
    assert latest(run).name == f"step-{last:08d}", "the checkpoint is not of the step in progress"
    medtune("train", str(recipe), "--run-dir", str(run))
    assert_same_run(run, baseline)


def test_kill_during_a_checkpoint_write_resumes_from_the_previous_one(recipe, baseline, tmp_path):
    run = tmp_path / "run"
    proc = start(recipe, run, env=hooks.env(hold_save_at=2 * SAVE_EVERY))
    held = run / "checkpoints" / f"step-{2 * SAVE_EVERY:08d}" / ".held"
    end = time.time() + 300
    while not held.exists():
        assert time.time() < end and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest(run).name == f"step-{SAVE_EVERY:08d}"
    assert not (held.parent / MARKER).exists()
    assert (run / "checkpoints" / "latest").read_text() == f"step-{SAVE_EVERY:08d}"
    out = medtune("train", str(recipe), "--run-dir", str(run))
    assert f"step-{SAVE_EVERY:08d} at step {SAVE_EVERY}" in out.stderr
    assert_same_run(run, baseline)


def _one_line(text: str, needle: str) -> str:
    found = [line for line in text.splitlines() if needle in line]
    assert len(found) == 1, f"{len(found)} lines with {needle!r}:\n{text[-6000:]}"
    return found[0]


def test_failed_checkpoint_write_on_one_rank_stops_every_rank_with_one_line(recipe, tmp_path):
    # rank 1 alone fails (RuntimeError, as torch.save on a full disk): rank 0 must not wait for it
    run = tmp_path / "run"
    proc = start(recipe, run, env=hooks.env(fail_save_at=2 * SAVE_EVERY))
    try:
        out, _ = proc.communicate(timeout=400)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == exitcodes.IO_ERROR, out[-4000:]
    line = _one_line(out, "writing checkpoint")
    assert line.startswith(f"medtune: error: writing checkpoint {run / 'checkpoints' / 'step-00000008'} "
                           "failed (rank 1: RuntimeError: [enforce fail at inline_container.cc:664] . "
                           "unexpected pos 1472 vs 1364; ")
    assert line.endswith(f"); the previous checkpoint {run / 'checkpoints' / 'step-00000004'} is intact")
    assert latest(run).name == "step-00000004"
    assert (run / "checkpoints" / "latest").read_text() == "step-00000004"
    assert not (run / "checkpoints" / "step-00000008").exists(), "the partial checkpoint was left"


def _used_bytes(path: Path) -> int:
    """Bytes a tree takes on a file system of 4 KiB pages (what a tmpfs charges)."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(-(-f.stat().st_size // 4096) * 4096 for f in files)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root to mount a small tmpfs in a private mount namespace")
def test_full_disk_during_a_checkpoint_write(recipe, baseline, tmp_path):
    """Issue 14, fault 8: a real full disk in the middle of the second checkpoint, three times."""
    ckpt = _used_bytes(baseline / "checkpoints" / f"step-{SAVE_EVERY:08d}")
    rest = sum(_used_bytes(p) for p in baseline.iterdir()
               if p.name not in ("checkpoints", "export", "probe.safetensors", "finished.json"))
    # the run's own files, one checkpoint and DeepSpeed's scripts fit, the second checkpoint does not
    size_kib = (rest + ckpt + ckpt // 2 + 256 * 1024) // 1024
    print(f"checkpoint {ckpt / 2**20:.2f} MiB, other files {rest / 2**20:.2f} MiB: tmpfs of {size_kib} KiB")
    for attempt in range(3):
        mnt, kept = tmp_path / f"disk{attempt}", tmp_path / f"kept{attempt}"
        mnt.mkdir()
        script = (f"mount -t tmpfs -o size={size_kib}k tmpfs {mnt} && "
                  f"{sys.executable} -m medtune.cli train {recipe} --run-dir {mnt}/run; code=$?; "
                  f"cp -a {mnt}/run {kept}; exit $code")
        with open(tmp_path / f"out{attempt}.txt", "w") as log:
            proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONPATH": str(REPO)})
            try:
                # the tmpfs exists only in the new namespace: watch it through the process's root
                inside = Path(f"/proc/{proc.pid}/root") / str(mnt).lstrip("/") / "run"
                wait_for_step(inside, 2 * SAVE_EVERY, proc)
                began = time.time()
                proc.wait(timeout=300)
                took = time.time() - began
            finally:
                os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
        out = (tmp_path / f"out{attempt}.txt").read_text()
        print(f"attempt {attempt}: exit {proc.returncode} {took:.1f} s after step {2 * SAVE_EVERY}")
        assert proc.returncode == exitcodes.IO_ERROR, out[-6000:]
        assert took < 60, f"{took:.0f} s from the failed save to the exit"
        line = _one_line(out, "writing checkpoint")
        assert line.startswith(f"medtune: error: writing checkpoint {mnt}/run/checkpoints/step-00000008 "
                               "failed (rank ")
        assert line.endswith(f"); the previous checkpoint {mnt}/run/checkpoints/step-00000004 is intact")
        assert "Traceback" not in out
        assert latest(kept).name == "step-00000004"
        assert (kept / "checkpoints" / "latest").read_text() == "step-00000004"
    # resumed on a roomy disk, it ends as if nothing had happened
    resumed = medtune("train", str(recipe), "--run-dir", str(tmp_path / "kept0"))
    assert f"resuming from {tmp_path / 'kept0' / 'checkpoints' / 'step-00000004'} at step 4" in resumed.stderr
    assert_same_run(tmp_path / "kept0", baseline)


def _resume_copy(baseline: Path, at: int, dest: Path) -> Path:
    """A run directory as an interrupted run would have left it at checkpoint `at`."""
    (dest / "checkpoints").mkdir(parents=True)
    shutil.copytree(baseline / "checkpoints" / f"step-{at:08d}", dest / "checkpoints" / f"step-{at:08d}")
    for name in ("metrics.jsonl", "data_order.jsonl"):
        shutil.copy(baseline / name, dest / name)
    return dest


def assert_same_data_and_close_losses(run: Path, reference: Path, after: int) -> None:
    order = [json.loads(line) for line in (run / "data_order.jsonl").read_text().splitlines()]
    ref_order = [json.loads(line) for line in (reference / "data_order.jsonl").read_text().splitlines()]
    assert [o["step"] for o in order] == list(range(1, STEPS + 1))
    assert [o["samples"] for o in order] == [o["samples"] for o in ref_order]
    seen = [s for o in order if o["epoch"] == 0 for s in o["samples"]]
    assert len(seen) == len(set(seen)), "a sample was seen twice in one epoch"
    got, want = metrics(run), metrics(reference)
    for g, w in zip(got[after:], want[after:]):
        assert abs(g["train/loss"] - w["train/loss"]) <= 1e-4 * abs(w["train/loss"]), (g, w)


@pytest.mark.parametrize("procs", [1, 4])
def test_elastic_resume_from_two_ranks(recipe, baseline, tmp_path, procs):
    run = _resume_copy(baseline, SAVE_EVERY, tmp_path / "run")
    out = medtune("train", str(recipe), "--run-dir", str(run), f"launch.procs={procs}")
    assert "universal checkpoint" in out.stderr
    assert_same_data_and_close_losses(run, baseline, after=SAVE_EVERY)


def test_elastic_resume_from_one_rank_to_two(recipe, baseline, tmp_path):
    # one rank accumulating 4 packs takes the baseline's global batch (2 ranks x 2)
    single = tmp_path / "single"
    medtune("train", str(recipe), "--run-dir", str(single), "launch.procs=1", "train.grad_accum=4")
    assert_same_data_and_close_losses(single, baseline, after=0)
    run = _resume_copy(single, SAVE_EVERY, tmp_path / "run")
    out = medtune("train", str(recipe), "--run-dir", str(run), "launch.procs=2", "train.grad_accum=4")
    assert "universal checkpoint" in out.stderr
    assert_same_data_and_close_losses(run, baseline, after=SAVE_EVERY)


def test_changed_recipe_is_refused_naming_the_key(recipe, baseline, tmp_path):
    run = _resume_copy(baseline, SAVE_EVERY, tmp_path / "run")
    out = medtune("train", str(recipe), "--run-dir", str(run), "train.lr=1e-3", check=False)
    assert out.returncode == exitcodes.USAGE
    (line,) = [x for x in out.stderr.splitlines() if "error" in x]
    assert "train.lr: 0.002 -> 0.001" in line and "--allow-changed" in line
    assert not (run / "logs").exists(), "ranks were started for a refused resume"


def test_the_same_command_resumes_in_one_run_directory(recipe, baseline, tmp_path):
    """Issue 14, fault 7: without --run-dir, a crash and then the very same command, twice."""
    run = tmp_path / "runs" / "tiny"  # runs/<recipe name>, the name being the recipe file's stem (tiny.yaml)
    proc = subprocess.Popen([sys.executable, "-m", "medtune.cli", "train", str(recipe)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wait_for_step(run, SAVE_EVERY + 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = medtune("train", str(recipe), cwd=tmp_path)
    assert f"resuming from {run / 'checkpoints' / f'step-{SAVE_EVERY:08d}'} at step {SAVE_EVERY}" in out.stderr
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["tiny"]
    assert [m["step"] for m in metrics(run)] == list(range(1, STEPS + 1))  # max_steps, not 6 + 12
    assert_same_run(run, baseline)
    # once finished, the same command says so and trains nothing
    log = (run / "logs" / "launcher.log").read_bytes()
    again = medtune("train", str(recipe), cwd=tmp_path)
    assert f"[medtune] {run} is complete: trained to step {STEPS} (checkpoint step-{STEPS:08d}, export " \
           f"{run / 'export'}); nothing to do" in again.stderr
    assert (run / "logs" / "launcher.log").read_bytes() == log, "ranks were started again"
    # and a changed recipe under the same name is refused, naming the key
    changed = medtune("train", str(recipe), "train.lr=1e-3", cwd=tmp_path, check=False)
    assert changed.returncode == exitcodes.USAGE
    (line,) = [x for x in changed.stderr.splitlines() if "error" in x]
    assert "train.lr: 0.002 -> 0.001" in line and "--allow-changed" in line


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    init = save_tiny_model(tmp_path / "init", seed=1)
    recipe = write_recipe(tmp_path / "nan.yaml", {
        "base": str(RECIPES / "data" / "demo.yaml"),
        "model": {"name_or_path": str(init), "dtype": "fp32"},
        "data": {"max_tokens": 512},
        "train": {"max_steps": STEPS, "grad_accum": 2, "lr": 2e-3, "max_bad_steps": 3},
        "launch": {"procs": 2}, "logging": {"progress": False},
    })
    run = tmp_path / "run"
    out = medtune("train", str(recipe), "--run-dir", str(run), env_extra=hooks.env(nan_at=[1, 2, 3, 4]),
                  check=False)
    assert out.returncode == exitcodes.BAD_LOSS, out.stderr[-3000:]
    assert "stopping: 3 non-finite steps in a row" in out.stdout  # what the ranks printed
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/skipped_steps")] == [(1, 1), (2, 2), (3, 3)]
    assert latest(run).name == "step-00000003"
    # usable: it exports, and no update was applied, so it holds exactly the initial weights
    medtune("export", str(run), "--out", str(tmp_path / "export"))
    initial, saved = load_weights(init), load_weights(tmp_path / "export")
    assert all(torch.equal(saved[k], initial[k]) for k in saved)
