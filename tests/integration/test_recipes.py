"""Every recipe file loads and validates; every model family trains for real; the planner agrees with DeepSpeed."""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pytest

from medtune import config
from medtune.models.families import FAMILIES, PUBLISHED
from tests.conftest import RECIPES, REPO, SHARED_DATA
from tests.integration.helpers import medtune, metrics, write_recipe

CORPORA = REPO / "tests" / "assets" / "corpora"
ALL = sorted(p for p in RECIPES.rglob("*.yaml"))


def _composed(path: Path, tmp_path: Path) -> Path:
    """A whole recipe around a part file: model parts get the demo data, data parts the tiny model."""
    folder = path.parent.relative_to(RECIPES).as_posix()
    if folder == ".":
        return path
    if folder == "models":
        return write_recipe(tmp_path / "with-data.yaml", {"base": [str(RECIPES / "data/demo.yaml"), str(path)]})
    if folder == "data":
        return write_recipe(tmp_path / "with-model.yaml",
                            {"base": [str(RECIPES / "models/tiny-llama.yaml"), str(path)]})
    pytest.fail(f"{path}: recipes/{folder}/ is a folder this test does not know; teach it how to "
                "validate the recipes there")


@pytest.mark.parametrize("path", [p for p in ALL if p.parent.name != "eval"],
                         ids=[str(p.relative_to(RECIPES)) for p in ALL if p.parent.name != "eval"])
def test_every_recipe_loads_and_validates(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_DATA", str(CORPORA))  # synthetic files in the documented layout
    text = path.read_text()
    assert text.startswith("#") and "medtune " in text.split("\n\n")[0], \
        f"{path.name}: start with a comment showing the command that runs it"
    recipe = config.load(_composed(path, tmp_path), check_files=False)
    if recipe.model.name_or_path:
        assert recipe.model.family in FAMILIES and recipe.model.name_or_path in PUBLISHED, path.name
    if path.parent == RECIPES and SHARED_DATA.is_dir():  # experiment recipes find their files too
        config.load(path)


@pytest.mark.parametrize("family,model_recipe", [("llama", "llama2-7b.yaml"),
                                                 ("mistral", "mistral-7b-v0.3.yaml"),
                                                 ("qwen2", "qwen2.5-7b.yaml")])
def test_each_family_trains_two_steps_under_two_rank_zero3(family, model_recipe, tmp_path):
    """The real recipe of the family, its model shrunk to the family's tiny config."""
    recipe = write_recipe(tmp_path / f"{family}.yaml", {
        "base": [str(RECIPES / "data/demo.yaml"), str(RECIPES / "models" / model_recipe)],
        "model": {"name_or_path": None, "config": FAMILIES[family].tiny,
                  "train_tokenizer": {"vocab_size": 1000}, "dtype": "fp32"},
        "data": {"max_tokens": 512},
        "train": {"max_steps": 2, "grad_accum": 1, "lr": 1e-3},
        "launch": {"procs": 2}, "logging": {"progress": False},
    })
    r = config.load(recipe)
    assert r.model.family == family
    run = tmp_path / "run"
    medtune("train", str(recipe), "--run-dir", str(run))
    assert [m["step"] for m in metrics(run) if "train/loss" in m] == [1, 2]  # the demo evaluates at the end
    assert (run / "hf" / "config.json").read_text().count(f'"model_type": "{FAMILIES[family].model_type}"') == 1
    # the export stops where training taught it to: the trained tokenizer's <s> = 1, </s> = 2, no
    # pad (qwen2's inline config has no bos/eos at all), and </s> ends every trained sample
    from medtune.data.prepare import prepare
    from medtune.data.tokenize import IGNORE

    last = {next(x for x in reversed(y) if x != IGNORE) for y in prepare(r, log=lambda _: None).dataset["labels"]}
    assert last == {2}
    for name in ("config.json", "generation_config.json"):
        saved = json.loads((run / "export" / name).read_text())
        assert (saved["bos_token_id"], saved["eos_token_id"], saved.get("pad_token_id")) == (1, 2, None), name


@pytest.mark.parametrize("family,loss", [("gemma2", "chunked"), ("granite", "standard")])
def test_a_family_with_no_recipe_trains_under_default_kernels(family, loss, tmp_path):
    """Issue 19: Gemma-2 (soft-caps, sliding window 8 on alternate layers) died inside the ranks with
    transformers' traceback under the default kernels, and ``family: gemma2`` was refused."""
    recipe = write_recipe(tmp_path / f"{family}.yaml", {
        "base": [str(RECIPES / "data/demo.yaml")],
        "model": {"config": FAMILIES[family].tiny, "family": FAMILIES[family].model_type,
                  "train_tokenizer": {"vocab_size": 1000}, "dtype": "fp32"},
        "data": {"max_tokens": 512},
        "kernels": {"loss": loss},
        "train": {"max_steps": 2, "grad_accum": 1, "lr": 1e-3},
        "launch": {"procs": 2}, "logging": {"progress": False},
    })
    run = tmp_path / "run"
    medtune("train", str(recipe), "--run-dir", str(run))
    losses = [m["train/loss"] for m in metrics(run) if "train/loss" in m]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def _deepspeed_cold_gib(params: int, largest: int, gpus: int, nodes: int) -> float:
    """The per-GPU figure DeepSpeed's own printout gives for no offload, zero.Init."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        estimate_zero3_model_states_mem_needs_all_cold(params, largest, gpus, nodes)
    line = next(ln for ln in buf.getvalue().splitlines()
                if "offload_param=none, offload_optimizer=none, zero_init=1" in ln)
    return float(re.findall(r"([\d.]+)GB", line)[1])


@pytest.mark.parametrize("recipe", ["llama2-7b-medtuned.yaml", "llama2-13b-medtuned.yaml"])
@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_plan_model_states_agree_with_deepspeed(recipe, nodes):
    from medtune.models import configs
    from medtune.planning import memory

    r = config.load(RECIPES / recipe, check_files=False)
    shape = memory.model_shape(configs.load_config(r.model))
    ours = memory.rows(shape, nodes, 8, r.data.max_tokens)[0].states / memory.GiB
    theirs = _deepspeed_cold_gib(shape.params, shape.largest_layer, 8, nodes)
    assert abs(ours - theirs) <= 0.05 * theirs, (ours, theirs)
    assert 6.7e9 < shape.params < 6.8e9 if "7b" in recipe else 13.0e9 < shape.params < 13.1e9


def test_plan_prints_the_table_and_the_smallest_node_count():
    out = medtune("plan", str(RECIPES / "llama2-13b-medtuned.yaml"), "--nodes", "1",
                  "--gpus-per-node", "8", "--gpu-mem", "24").stdout
    assert "13.02B parameters" in out and "offload optimizer" in out
    assert "does NOT fit on 1 x 8; smallest node count that fits: 2" in out


def test_llamafactory_deepspeed_json_trains_with_the_sizes_medtune_derives(tmp_path):
    """Issue 14, fault 9: its "auto" sizes were DeepSpeed's defaults (persistence 1e5 kept every weight
    of the hidden-64 model whole on every rank); the run directory's file is what the ranks used."""
    import json

    from medtune.engine.zero import build_config

    recipe = write_recipe(tmp_path / "lf.yaml", {
        "base": [str(RECIPES / "demo.yaml")],
        "zero": {"deepspeed_config": str(REPO / "tests" / "assets" / "deepspeed" / "llamafactory_z3.json")},
        "train": {"max_steps": 2, "export": False}, "logging": {"progress": False},
    })
    run = tmp_path / "run"
    medtune("train", str(recipe), "--run-dir", str(run))
    used = json.loads((run / "deepspeed_config.json").read_text())
    hidden = config.load(recipe).model.config["hidden_size"]
    z = used["zero_optimization"]
    assert (z["reduce_bucket_size"], z["stage3_prefetch_bucket_size"], z["stage3_param_persistence_threshold"]) \
        == (hidden * hidden, int(0.9 * hidden * hidden), 10 * hidden)
    assert used == build_config(config.load(run / "recipe.yaml"), 2, hidden, False)
    assert [m["step"] for m in metrics(run) if "train/loss" in m] == [1, 2]  # the demo evaluates at the end
