"""Evaluation during training, for real: 2-rank ZeRO-3 runs of the tiny demo model on CPU (gloo).

- ``eval/loss`` at the cadence asked equals a plain one-process computation
  of the token-mean response loss over the validation samples, one sample at
  a time (no packing), with the weights of that step's checkpoint (1e-6, fp32);
  on 2 ranks it is not multiplied or divided by the number of ranks
  (transformers#35078: eval loss ``num_processes`` times too large with
  ``average_tokens_across_devices``).
- Training losses and final weights with evaluation on are bit-identical to
  the same run with it off (karpathy/char-rnn#17: "-eval_val_every changes
  training" with the same seed).
- SIGKILL in the middle of an evaluation, then the same command again, is
  bit-identical to the uninterrupted run, evaluation values included.
- ``checkpoints/best`` survives ``keep_last: 1`` and ``medtune export RUN
  --best`` exports it (transformers#15089 / #11748: the best checkpoint
  deleted under ``save_total_limit``). ``best_mode: max`` on ``eval/loss``
  makes the first evaluation the best, so the best is never the newest.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medtune import config
from medtune.engine.checkpoint import BEST, MARKER, latest
from tests import hooks
from tests.conftest import RECIPES
from tests.integration.helpers import (assert_same_run, load_weights, medtune, metrics, train_losses,
                                       write_recipe)

STEPS, EVERY = 12, 4
BASE = {
    "base": [str(RECIPES / "models" / "tiny-llama.yaml"), str(RECIPES / "data" / "demo.yaml")],
    # attention dropout on: an evaluation run in train mode, or one that drew from the training
    # RNG, would change the evaluation or the training, and the tests below would see it
    "model": {"config": {"attention_dropout": 0.1}},
    "data": {"max_tokens": 512, "validation": {"fraction": 0.1, "seed": 3}},
    "train": {"max_steps": STEPS, "save_every": EVERY, "keep_last": 1, "grad_accum": 2, "lr": 2e-3,
              "warmup_steps": 2, "seed": 0, "eval_every": EVERY, "best_metric": "eval/loss",
              "best_mode": "max"},
    "launch": {"procs": 2},
    "logging": {"progress": False},
}


def _recipe(tmp: Path, name: str, **train) -> Path:
    tree = json.loads(json.dumps(BASE))
    tree["train"].update(train)
    tree["train"] = {k: v for k, v in tree["train"].items() if v is not None}
    return write_recipe(tmp / f"{name}.yaml", tree)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("evalloss")
    return {"on": _recipe(tmp, "on"), "off": _recipe(tmp, "off", eval_every=0, best_metric=None, best_mode=None)}


@pytest.fixture(scope="module")
def run_on(recipes, tmp_path_factory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("on") / "run"
    out = medtune("train", str(recipes["on"]), "--run-dir", str(run))
    return run, out.stdout + out.stderr  # the ranks' lines come through the launcher's stdout


def _evals(run: Path) -> dict[int, float]:
    return {m["step"]: m["eval/loss"] for m in metrics(run) if "eval/loss" in m}


def _reference_loss(export_dir: Path, validation) -> float:
    """Token-mean response cross-entropy, one sample at a time, in this one process (fp32, sums in fp64)."""
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for row in validation:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor(row["labels"][1:])
            logits = net(input_ids=ids).logits[0, :-1]
            keep = labels != -100
            total += torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum").double().item()
            tokens += int(keep.sum())
    return total / tokens


def test_eval_loss_at_the_cadence_equals_a_one_process_computation(run_on, recipes, tmp_path):
    from medtune.data.prepare import prepare

    run, stderr = run_on
    evals = _evals(run)
    assert sorted(evals) == [4, 8, 12], evals
    validation = prepare(config.load(recipes["on"]), log=lambda _: None).validation
    assert len(validation) == 36  # 10% of the demo's 360 records
    # the best (step 4 under best_mode max) through `medtune export --best`, the last through the run's export
    medtune("export", str(run), "--best", "--out", str(tmp_path / "best"))
    for step, export in ((4, tmp_path / "best"), (STEPS, run / "export")):
        want = _reference_loss(export, validation)
        print(f"step {step}: eval/loss {evals[step]!r}, one process {want!r}, |diff| {abs(evals[step] - want):.1e}")
        assert abs(evals[step] - want) < 1e-6, (step, evals[step], want)
    assert "step 4: eval/loss" in stderr and "-- best so far" in stderr
    assert f"tensorboard --logdir {run / 'tensorboard'}" in stderr


def test_best_checkpoint_survives_keep_last_and_exports(run_on, tmp_path):
    run, stderr = run_on
    ckpts = run / "checkpoints"
    assert os.readlink(ckpts / BEST) == "step-00000004"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-00000004", "step-00000012"]
    assert latest(run).name == "step-00000012"
    assert json.loads((ckpts / "step-00000012" / "trainer_state.json").read_text())["best_step"] == 4
    assert f"best checkpoint: {ckpts / BEST} -> step-00000004" in stderr
    out = medtune("export", str(run), "--best", "--out", str(tmp_path / "best"))
    assert "step-00000004" in out.stdout
    best, last = load_weights(tmp_path / "best"), load_weights(run / "export")
    assert best.keys() == last.keys() and any(not torch.equal(best[k], last[k]) for k in best)


def test_evaluation_changes_no_training_loss_nor_weight(run_on, recipes, tmp_path):
    run, _ = run_on
    off = tmp_path / "off"
    medtune("train", str(recipes["off"]), "--run-dir", str(off))
    assert not _evals(off)
    assert len(train_losses(run)) == STEPS
    assert_same_run(run, off)


def test_sigkill_during_an_evaluation_then_resume_is_bit_identical(run_on, recipes, tmp_path):
    run, _ = run_on
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "medtune.cli", "train", str(recipes["on"]), "--run-dir", str(killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, **hooks.env(hold_eval_at=8)})
    held, end = killed / ".eval-held", time.time() + 300
    while not held.exists():
        assert time.time() < end and proc.poll() is None, proc.stdout.read()[-4000:] if proc.poll() else "timeout"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest(killed).name == "step-00000004"
    assert sorted(_evals(killed)) == [4]  # the held evaluation of step 8 logged nothing
    out = medtune("train", str(recipes["on"]), "--run-dir", str(killed))
    assert "step-00000004 at step 4" in out.stderr
    assert_same_run(killed, run)
    assert _evals(killed) == _evals(run)
    assert os.readlink(killed / "checkpoints" / BEST) == "step-00000004"
    assert (killed / "checkpoints" / "step-00000004" / MARKER).is_file()
