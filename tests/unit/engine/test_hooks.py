"""Faults reach real processes by injection (tests/hooks), and product code reads no test variable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from medtune.engine import checkpoint, trainer
from tests import hooks

PACKAGE = Path(__file__).resolve().parents[3] / "medtune"


def test_product_code_holds_no_test_hook_names():
    found = [f"{p.relative_to(PACKAGE.parent)}" for p in PACKAGE.rglob("*.py")
             if "MEDTUNE_TEST" in p.read_text() or "tests.hooks" in p.read_text()]
    assert found == []


def test_the_default_hooks_change_nothing(tmp_path):
    assert type(checkpoint.HOOKS) is checkpoint.SaveHooks and type(trainer.HOOKS) is trainer.TrainHooks
    assert checkpoint.HOOKS.after_shards(8, tmp_path, 0) is None and list(tmp_path.iterdir()) == []
    assert trainer.HOOKS.loss_hook(1) is None


def test_injected_faults_reach_a_fresh_interpreter(tmp_path):
    """What a rank started with `hooks.env` gets, before it imports anything of medtune."""
    code = ("import torch, medtune.engine.trainer as t, medtune.engine.checkpoint as c\n"
            "from pathlib import Path\n"
            "h = t.HOOKS.loss_hook(2)\n"
            "print(t.HOOKS.loss_hook(1), torch.isnan(h(torch.ones(()))).item())\n"
            "c.HOOKS.after_shards(3, Path('.'), 0)\n"
            "try:\n"
            "    c.HOOKS.after_shards(3, Path('.'), 1)\n"
            "except RuntimeError as e:\n"
            "    print('failed:', e)\n")
    env = {**os.environ, **hooks.env(fail_save_at=3, nan_at=[2, 5]), "WORLD_SIZE": "2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "None True",
        "failed: [enforce fail at inline_container.cc:664] . unexpected pos 1472 vs 1364"]


def test_without_faults_asked_the_plugin_installs_nothing(tmp_path):
    env = {**os.environ, **hooks.env()}
    env.pop("MEDTUNE_TEST_HOOKS")
    done = subprocess.run([sys.executable, "-c", "import medtune.engine.trainer as t; print(type(t.HOOKS).__name__)"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.stdout.strip() == "TrainHooks", done.stderr[-2000:]

