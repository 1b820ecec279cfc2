"""hpZ for real: 2 simulated nodes of 2 CPU ranks through `medtune launch --launcher no_ssh`.

One run with ``zero.hierarchy: 2`` and one with ``off`` (packed rows,
accumulation 2, fp32, 3 steps, ``--comm-log``) must end with the same
weights, log the collectives `medtune plan` predicts, and leave checkpoints
that resume bit-identically, with hpZ or without it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medtune.planning import comm
from medtune.engine import comm_log
from tests.conftest import RECIPES
from tests.integration.helpers import assert_same_run, load_weights, medtune, metrics, write_recipe
from tests.integration.infra import free_port

STEPS, SAVED = 3, 2


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("hpz") / "tiny.yaml", {
        "base": [str(RECIPES / "models" / "tiny-llama.yaml"), str(RECIPES / "data" / "demo.yaml")],
        "data": {"max_tokens": 512},
        "train": {"max_steps": STEPS, "save_every": SAVED, "grad_accum": 2, "lr": 2e-3, "seed": 0,
                  "weight_decay": 0.1},
        "launch": {"procs": 2, "nodes": 2, "timeout_minutes": 2.0},
        "logging": {"progress": False},
    })


def two_nodes(recipe: Path, run: Path, *extra: str) -> str:
    """Both "nodes" of a 2 x 2 job, as `medtune launch --launcher no_ssh` on each host would run."""
    hostfile = run.parent / f"{run.name}.hosts"
    hostfile.write_text("node-a slots=2\nnode-b slots=2\n")
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "medtune.cli", "launch", str(recipe), *extra,
                               "--hostfile", str(hostfile), "--launcher", "no_ssh", "--node-rank", str(r),
                               "--master-addr", "127.0.0.1", "--master-port", port, "--run-dir", str(run)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "dist_world_size=4" in (run / "logs" / "launcher-node1.log").read_text()
    return outs[0]


@pytest.fixture(scope="module")
def flat(recipe, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("flat") / "run"
    two_nodes(recipe, run, "zero.hierarchy=off", "--comm-log")
    return run


@pytest.fixture(scope="module")
def hpz(recipe, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hpz-run") / "run"
    two_nodes(recipe, run, "zero.hierarchy=2", "--comm-log")
    return run


@pytest.fixture(scope="module")
def predicted(recipe, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("plan") / "plan.json"
    medtune("plan", str(recipe), "--nodes", "2", "--gpus-per-node", "2", "--json", str(out))
    return json.loads(out.read_text())["logged_per_step"]


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    assert a.keys() == b.keys()
    return {k: ((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-30)).item() for k in b}


def test_hpz_trains_exactly_like_flat_zero3(flat, hpz):
    plans = [json.loads((r / "zero_plan.json").read_text()) for r in (flat, hpz)]
    assert [p["hpz"] for p in plans] == [1, 2] and all(p["world"] == 4 for p in plans)
    zero = json.loads((hpz / "deepspeed_config.json").read_text())["zero_optimization"]
    assert zero["zero_hpz_partition_size"] == 2
    assert "hpZ on, secondary weight shards within groups of 2 ranks" in \
        (hpz / "logs" / "launcher-node0.log").read_text()
    diffs = max_rel_diff(load_weights(hpz / "export"), load_weights(flat / "export"))
    assert max(diffs.values()) <= 1e-6, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
    losses = [[m["train/loss"] for m in metrics(r) if "train/loss" in m] for r in (flat, hpz)]
    assert len(losses[0]) == STEPS
    assert all(abs(a - b) <= 1e-6 * abs(a) for a, b in zip(*losses)), losses
    # DeepSpeed writes the same checkpoint files either way (hpZ's secondary shards are not saved)
    saved = [r / "checkpoints" / f"step-{SAVED:08d}" for r in (flat, hpz)]
    assert sorted(p.name for p in saved[0].rglob("*")) == sorted(p.name for p in saved[1].rglob("*"))


@pytest.mark.parametrize("setting", ["flat", "hpz"])
def test_comm_log_agrees_with_the_plan(setting, flat, hpz, predicted):
    run, row = (flat, "flat ZeRO-3") if setting == "flat" else (hpz, "hpZ (2)")
    want = predicted[row]
    other = predicted["hpZ (2)" if setting == "flat" else "flat ZeRO-3"]
    # the settings differ by more than the tolerance, so a wrong setting cannot pass
    assert abs(other[-1]["all_gather"] - want[-1]["all_gather"]) > 0.3 * want[-1]["all_gather"]
    for rank in range(4):
        got = comm_log.read(run, rank)
        assert [r["step"] for r in got] == list(range(1, STEPS + 1))
        for step, (g, w) in enumerate(zip(got, want), start=1):
            gathered = comm_log.step_bytes(g, comm.ALL_GATHER_OPS)
            reduced = comm_log.step_bytes(g, comm.REDUCE_SCATTER_OPS)
            where = f"{setting} rank {rank} step {step}: logged {gathered} / {reduced}, planned {w}"
            assert abs(gathered - w["all_gather"]) <= 0.10 * w["all_gather"], where
            assert abs(reduced - w["reduce_scatter"]) <= 0.10 * w["reduce_scatter"], where


def resume_copy(source: Path, dest: Path) -> Path:
    """A run directory as a run stopped after step `SAVED` leaves it."""
    (dest / "checkpoints").mkdir(parents=True)
    name = f"step-{SAVED:08d}"
    shutil.copytree(source / "checkpoints" / name, dest / "checkpoints" / name)
    lines = (source / "metrics.jsonl").read_text().splitlines()[:SAVED]
    (dest / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    order = (source / "data_order.jsonl").read_text().splitlines()[:SAVED]
    (dest / "data_order.jsonl").write_text("".join(line + "\n" for line in order))
    return dest


@pytest.mark.parametrize("hierarchy", ["2", "off"], ids=["hpz-to-hpz", "hpz-to-off"])
def test_hpz_checkpoint_resumes_bit_identically_with_or_without_hpz(hierarchy, hpz, recipe, tmp_path):
    # (off -> hpZ is the same load: the checkpoint files are the same, see the first test)
    run = resume_copy(hpz, tmp_path / "run")
    out = two_nodes(recipe, run, f"zero.hierarchy={hierarchy}")
    assert f"resuming from {run / 'checkpoints' / f'step-{SAVED:08d}'} at step {SAVED}" in out
    assert "universal checkpoint" not in out  # same world: DeepSpeed's own files load as they are
    assert_same_run(run, hpz)


def test_hpz_checkpoint_resumes_on_one_node_without_hpz_through_universal(hpz, recipe, tmp_path):
    run = resume_copy(hpz, tmp_path / "run")
    out = medtune("train", str(recipe), "--run-dir", str(run), "launch.nodes=1", "launch.procs=2")
    printed = out.stdout + out.stderr  # the launching process's and the ranks'
    assert "universal checkpoint" in printed and "hpZ off (zero.hierarchy=auto: one node)" in printed
    got, want = metrics(run), metrics(hpz)
    assert len(got) == STEPS
    assert all(abs(g["train/loss"] - w["train/loss"]) <= 1e-4 * w["train/loss"] for g, w in zip(got, want))
