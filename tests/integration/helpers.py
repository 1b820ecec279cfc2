"""Running medtune for real from tests: subprocesses, tiny models, reading runs back."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from tests.conftest import RECIPES, REPO

TINY_LLAMA = yaml.safe_load((RECIPES / "models" / "tiny-llama.yaml").read_text())["model"]["config"]

# The shared baseline run (tests/integration/conftest.py, fixtures `baseline_recipe` and
# `baseline_run`): the tiny Llama on the demo data, 2 ranks, ZeRO-3, 12 steps, a checkpoint
# every 4. The same recipe on the same world trains bit-identically, so every test that
# trains this recipe (resumed, preempted, launched through Slurm, mpirun, ...) compares
# with this one run instead of training its own.
BASELINE_STEPS, BASELINE_SAVE_EVERY = 12, 4


def baseline_recipe_tree() -> dict:
    """The shared baseline's recipe, as a YAML tree (write it with `write_recipe`)."""
    return {
        "base": [str(RECIPES / "models" / "tiny-llama.yaml"), str(RECIPES / "data" / "demo.yaml")],
        "data": {"max_tokens": 512},
        # weight decay on: a universal checkpoint must keep biases and norms undecayed
        "train": {"max_steps": BASELINE_STEPS, "save_every": BASELINE_SAVE_EVERY, "grad_accum": 2,
                  "lr": 2e-3, "warmup_steps": 2, "seed": 0, "weight_decay": 0.1},
        "launch": {"procs": 2},
        "logging": {"progress": False},
    }


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under `root`, keyed by its path relative to `root` ('->' + target for links)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "->" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "(directory)"
    return out


def changed_paths(root: Path, digest: dict[str, str]) -> list[str]:
    """Paths under `root` (relative) added, removed or changed since `digest` = tree_digest(root) was taken."""
    now = tree_digest(root)
    return sorted(k for k in digest.keys() | now.keys() if digest.get(k) != now.get(k))


def medtune(*args: str, timeout: int = 600, check: bool = True,
            env_extra: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``medtune ARGS`` in a subprocess (in `cwd`); on failure the assertion shows its output."""
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "medtune.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)
    if check:
        assert proc.returncode == 0, f"medtune {' '.join(args)} exited {proc.returncode}:\n" \
                                     f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def write_recipe(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def demo_tokenizer_dir() -> Path:
    """The sentencepiece tokenizer medtune trains for the demo data (trained once per cache)."""
    from medtune import config
    from medtune.data.prepare import prepare
    from medtune.data.tokenizer import location

    recipe = config.load(RECIPES / "demo.yaml")
    prepare(recipe, log=lambda _: None)
    return Path(location(recipe))


def save_tiny_model(out: Path, seed: int = 0, family_config: dict | None = None) -> Path:
    """A randomly initialised tiny model plus the demo tokenizer, as a from_pretrained dir."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = dict(family_config or TINY_LLAMA)
    torch.manual_seed(seed)
    net = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    net.save_pretrained(out)
    AutoTokenizer.from_pretrained(demo_tokenizer_dir()).save_pretrained(out)
    return out


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def load_weights(export_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(export_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def assert_same_run(run: Path, baseline: Path) -> None:
    """The same exported weights, bit for bit, and the same per-step losses as `baseline`."""
    got, want = load_weights(run / "export"), load_weights(baseline / "export")
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), f"{k} differs from the uninterrupted run"
    assert train_losses(run) == train_losses(baseline)


def train_losses(run_dir: Path) -> list[float]:
    """The per-step training losses (evaluation lines, ``eval/...``, left out)."""
    return [m["train/loss"] for m in metrics(run_dir) if "train/loss" in m]
