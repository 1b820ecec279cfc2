"""Recipes: composition, overrides, and one clear line for every bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medtune import cli, config
from medtune.models.families import FAMILIES
from tests.conftest import RECIPES

DEMO_DATA = str(RECIPES / "data" / "demo.jsonl")
GEMMA2 = FAMILIES["gemma2"].tiny
GOOD = {
    "model": {"config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                         "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 1000},
              "train_tokenizer": {"vocab_size": 1000}, "dtype": "fp32"},
    "data": {"sources": [{"path": DEMO_DATA, "format": "jsonl"}], "max_tokens": 512},
    "launch": {"procs": 2},
}


def _write(tmp: Path, name: str, tree_or_text) -> Path:
    p = tmp / name
    p.write_text(tree_or_text if isinstance(tree_or_text, str) else yaml.safe_dump(tree_or_text))
    return p


def _with(**sections) -> dict:
    tree = yaml.safe_load(yaml.safe_dump(GOOD))
    for section, value in sections.items():
        if value is None:
            tree.pop(section, None)
        elif isinstance(value, dict) and isinstance(tree.get(section), dict):
            tree[section].update(value)
        else:
            tree[section] = value
    return tree


def test_good_recipe_loads_with_schema_defaults(tmp_path):
    r = config.load(_write(tmp_path, "good.yaml", GOOD))
    assert r.name == "good" and r.launch.procs == 2 and r.train.lr == 2e-5
    assert r.data.sources[0].path == DEMO_DATA


def test_base_composition_overrides_and_relative_paths(tmp_path):
    (tmp_path / "parts").mkdir()
    _write(tmp_path / "parts", "data.yaml", {"data": {"sources": [{"path": "x.jsonl"}]}})
    (tmp_path / "parts" / "x.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    _write(tmp_path, "model.yaml", {"model": GOOD["model"], "train": {"lr": 1e-4, "epochs": 2}})
    top = _write(tmp_path, "top.yaml", {"base": ["model.yaml", "parts/data.yaml"],
                                        "train": {"epochs": 3}})
    r = config.load(top, ["train.lr=2e-5", "launch.procs=4"])
    assert r.train.epochs == 3                        # the file beats its base
    assert r.train.lr == 2e-5 and r.launch.procs == 4  # the command line beats the file
    assert r.data.sources[0].path == str((tmp_path / "parts" / "x.jsonl").resolve())


def test_bases_are_found_under_recipes_root():
    r = config.load(RECIPES / "demo.yaml")
    assert r.model.config["model_type"] == "llama" and r.data.template == "paper"


def test_resolved_recipe_round_trips(tmp_path):
    r = config.load(RECIPES / "demo.yaml", ["train.lr=1e-3"])
    config.dump(r, tmp_path / "resolved.yaml")
    assert config.load(tmp_path / "resolved.yaml") == r


# (case, recipe file contents or tree, overrides, the key the message must name)
BAD = [
    ("unknown section", _with(trian={"lr": 1e-4}), [], "unknown key 'trian': did you mean 'train'?"),
    ("misspelt key", _with(train={"epoch": 2}), [], "did you mean 'epochs'?"),
    ("wrong type", _with(train={"epochs": "three"}), [], "train.epochs = 'three'"),
    ("negative lr", _with(train={"lr": -1e-5}), [], "train.lr = -1.0e-05: must be greater than 0"),
    ("zero procs", _with(launch={"procs": 0}), [], "launch.procs = 0"),
    ("missing model", _with(model=None), [], "model: give exactly one of model.name_or_path"),
    ("name and config", _with(model={"name_or_path": "meta-llama/Llama-2-7b-hf"}), [],
     "model: give exactly one"),
    ("config without model_type", _with(model={"config": {"hidden_size": 8}}), [],
     "model.config: an inline config needs model_type"),
    ("bad scheduler", _with(train={"scheduler": "cosine_restarts"}), [],
     "train.scheduler = 'cosine_restarts': must be 'cosine', 'linear' or 'constant'"),
    ("unknown reader", _with(data={"sources": [{"path": DEMO_DATA, "format": "jsonll"}]}), [],
     "data.sources.0.format: unknown reader 'jsonll': did you mean 'jsonl'?"),
    ("missing data file", _with(data={"sources": [{"path": "/nonexistent/x.jsonl"}]}), [],
     "data.sources.0.path: /nonexistent/x.jsonl does not exist"),
    ("no sources", _with(data={"sources": []}), [], "data.sources: no data sources"),
    ("section not a mapping", _with(train=5), [], "train = 5"),
    ("bad YAML", "model:\n  name_or_path: [unclosed\n", [], "bad YAML"),
    ("missing base", _with(base="nowhere.yaml"), [], "nowhere.yaml does not exist"),
    ("bad override syntax", GOOD, ["train.lr"], "override 'train.lr' must look like section.key=value"),
    ("bad override value", GOOD, ["train.max_grad_norm=-1"], "command line: train.max_grad_norm = -1"),
    ("warmup ratio of one", _with(train={"warmup_ratio": 1.0}), [], "train.warmup_ratio = 1.0"),
    ("attention where it used to be", _with(model={"attention": "sdpa"}), [],
     "unknown key 'model.attention': it moved to kernels.attention"),
    ("unknown attention backend", _with(kernels={"attention": "flash"}), [],
     "kernels.attention = 'flash': must be 'auto', 'flash_attn', 'torch_varlen', 'sdpa_varlen'"),
    ("unknown loss head", _with(kernels={"loss": "fused"}), [], "kernels.loss = 'fused': must be 'standard' or"),
    ("zero peak", _with(logging={"peak_tflops": 0}), [], "logging.peak_tflops = 0: must be greater than 0"),
    # issue 14, fault 1: PyYAML keeps the last of two equal keys
    ("second train block", yaml.safe_dump(_with(train={"epochs": 3})) + "train:\n  lr: 1.0e-4\n", [],
     "duplicate key 'train' (first on line"),
    ("repeated data.max_tokens", yaml.safe_dump(_with()).replace("  max_tokens: 512\n",
                                                                 "  max_tokens: 512\n  max_tokens: 64\n"), [],
     "duplicate key 'data.max_tokens' (first on line"),
    # issue 14, fault 10: a model directory that is not there (was transformers' "Repo id must be..." traceback)
    ("missing model directory", _with(model={"config": None, "name_or_path": "/nonexistent"}), [],
     "model.name_or_path: /nonexistent: no such directory"),
    ("model path with two slashes", _with(model={"config": None, "name_or_path": "runs/old/export"}), [],
     "model.name_or_path: runs/old/export: no such directory"),
    ("family disagrees with the config", _with(model={"family": "qwen2"}), [],
     "model.config: model_type 'llama' is not of family qwen2"),
    # issue 17: evaluation during training
    ("validation fraction of 1", _with(data={"validation": {"fraction": 1.0}}), [],
     "data.validation.fraction = 1.0: must be less than 1"),
    ("validation with two kinds", _with(data={"validation": {"fraction": 0.1, "samples": 5}}), [],
     "data.validation: give exactly one of fraction"),
    ("validation unknown reader", _with(data={"validation": {"sources": [{"path": DEMO_DATA, "format": "jsnl"}]}}),
     [], "data.validation.sources.0.format: unknown reader 'jsnl'"),
    ("eval_every with nothing to evaluate", _with(train={"eval_every": 10}), [],
     "train.eval_every: nothing to evaluate: set data.validation"),
    ("best_metric of no known form", _with(data={"validation": {"fraction": 0.1}},
                                           train={"eval_every": 10, "best_metric": "loss"}), [],
     "train.best_metric: 'loss': must be eval/loss or eval/<set>/<metric>"),
    ("best_metric without eval_every", _with(data={"validation": {"fraction": 0.1}},
                                             train={"best_metric": "eval/loss"}), [],
     "train.best_metric: needs train.eval_every"),
    ("task best_metric without eval_tasks", _with(data={"validation": {"fraction": 0.1}},
                                                  train={"eval_every": 5, "best_metric": "eval/ncbi/f1"}), [],
     "train.best_metric: eval/ncbi/f1 is a task metric: set train.eval_tasks"),
    ("bad best_mode", _with(train={"best_mode": "lowest"}), [], "train.best_mode = 'lowest': must be 'min' or 'max'"),
    ("eval_tasks file missing", _with(train={"eval_every": 5, "eval_tasks": "/nonexistent/eval.yaml"}), [],
     "train.eval_tasks: /nonexistent/eval.yaml does not exist"),
    ("attention that would drop soft-capping", _with(model={"config": {**GEMMA2, "vocab_size": 1000}},
                                                     kernels={"attention": "sdpa"}), [],
     "kernels.attention = sdpa cannot honour the model's attention soft-capping (attn_logit_softcapping 50.0);"
     " use kernels.attention=flash_attn (or sdpa_varlen, eager, flex_attention)"),
]


@pytest.mark.parametrize("case,content,overrides,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_recipe_fails_before_any_rank_with_one_line(tmp_path, capsys, case, content,
                                                        overrides, expected):
    path = _write(tmp_path, "bad.yaml", content)
    code = cli.main(["train", str(path), *overrides, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert expected in err[0], err[0]
    where = "command line" if case.startswith("bad override") else str(path)
    assert where in err[0], err[0]
    assert not (tmp_path / "run").exists(), "a run directory was created for a bad recipe"


@pytest.mark.parametrize("family", ["gemma2", "granite", None])
def test_model_family_is_optional_and_open(tmp_path, family):
    """Issue 19: ``family: gemma2`` was refused ("known: llama, mistral, qwen2")."""
    model = {"config": {**FAMILIES[family or "gemma2"].tiny}}
    if family:
        model["family"] = family
    recipe = config.load(_write(tmp_path, "r.yaml", _with(model=model)))
    assert recipe.model.family == family


def test_max_tokens_smaller_than_a_prompt_fails_before_any_rank(tmp_path, capsys):
    path = _write(tmp_path, "short.yaml", _with(data={"max_tokens": 16}))
    code = cli.main(["train", str(path), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert str(path) in err[0] and "data.max_tokens = 16" in err[0] and "overlong: drop" in err[0]
    assert not (tmp_path / "run").exists()


def test_error_names_the_base_file_that_set_the_bad_key(tmp_path):
    _write(tmp_path, "base.yaml", _with(train={"lr": 0}))
    top = _write(tmp_path, "top.yaml", {"base": "base.yaml", "launch": {"procs": 1}})
    with pytest.raises(config.RecipeError) as err:
        config.load(top)
    assert str(tmp_path / "base.yaml") in str(err.value) and "train.lr = 0" in str(err.value)


def test_every_problem_is_reported_at_once(tmp_path):
    path = _write(tmp_path, "many.yaml", _with(train={"lr": -1, "epochs": 0}, launch={"procs": 0}))
    with pytest.raises(config.RecipeError) as err:
        config.load(path)
    assert len(err.value.problems) == 3
