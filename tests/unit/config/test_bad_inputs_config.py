"""Bad, unusual and unlucky configuration (issue 14, faults 1 and 10): one line, exit 2, nothing written."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from medtune import cli, config
from tests.conftest import RECIPES

TINY = str(RECIPES / "models" / "tiny-llama.yaml")
DEMO = str(RECIPES / "data" / "demo.yaml")


def _one_line_refusal(capsys, argv: list[str]) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(err) == 1, err
    return err[0]


# ---- fault 1: a key given twice in one mapping -------------------------------------------------

TWO_TRAIN_BLOCKS = f"""\
base: [{TINY}, {DEMO}]
train:
  epochs: 3
  grad_accum: 4
  save_every: 2
logging: {{progress: false}}
train:
  lr: 1.0e-4
"""


def test_second_train_block_is_refused_naming_the_key_and_both_lines(tmp_path, capsys):
    """PyYAML alone keeps the last block: epochs, grad_accum and save_every silently back to 1, 1, 0."""
    path = tmp_path / "two-train.yaml"
    path.write_text(TWO_TRAIN_BLOCKS)
    line = _one_line_refusal(capsys, ["train", str(path), "--run-dir", str(tmp_path / "run")])
    assert line == (f"medtune: error: {path}:7: duplicate key 'train' (first on line 2): "
                    "YAML keeps only the last; give it once")
    assert not (tmp_path / "run").exists()


def test_repeated_leaf_key_names_its_dotted_path(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"base: [{TINY}, {DEMO}]\ndata:\n  max_tokens: 512\n  seed: 1\n  max_tokens: 2048\n")
    with pytest.raises(config.RecipeError) as err:
        config.load(path)
    assert err.value.problems == [f"{path}:5: duplicate key 'data.max_tokens' (first on line 3): "
                                  "YAML keeps only the last; give it once"]


def test_every_repeat_is_reported_in_line_order(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(TWO_TRAIN_BLOCKS + "data: {max_tokens: 64, max_tokens: 128}\n")
    with pytest.raises(config.RecipeError) as err:
        config.load(path)
    assert [p.split(": duplicate key ")[1].split(" (")[0] for p in err.value.problems] == \
        ["'train'", "'data.max_tokens'"]
    assert err.value.problems[1].startswith(f"{path}:9: ") and "(first on line 9)" in err.value.problems[1]


def test_repeat_inside_a_list_item_and_in_a_base_names_that_file(tmp_path):
    base = tmp_path / "data-part.yaml"
    base.write_text(textwrap.dedent("""\
        data:
          sources:
            - path: a.jsonl
              format: jsonl
              format: conll
        """))
    top = tmp_path / "top.yaml"
    top.write_text(f"base: [{TINY}, {base}]\n")
    with pytest.raises(config.RecipeError) as err:
        config.load(top)
    assert err.value.problems == [f"{base}:5: duplicate key 'data.sources.0.format' (first on line 4): "
                                  "YAML keeps only the last; give it once"]


def test_merge_keys_are_not_repeats(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("a: &common {x: 1, y: 2}\nb:\n  <<: *common\n  y: 3\n")
    assert config.read_yaml(path) == {"a": {"x": 1, "y": 2}, "b": {"x": 1, "y": 3}}


def test_repeat_in_an_override_value(tmp_path, capsys):
    line = _one_line_refusal(capsys, ["train", str(RECIPES / "demo.yaml"), "data={max_tokens: 64, max_tokens: 9}",
                                      "--run-dir", str(tmp_path / "run")])
    assert "command line: override" in line and "duplicate key 'max_tokens' on lines 1 and 1" in line
    assert not (tmp_path / "run").exists()


def test_repeat_in_an_evaluation_recipe(tmp_path, capsys):
    from medtune.evaluation import sets

    path = tmp_path / "eval.yaml"
    path.write_text("sets:\n  - {path: x, format: conll}\ngeneration:\n  num_beams: 1\n"
                    "generation:\n  max_new_tokens: 8\n")
    with pytest.raises(config.RecipeError) as err:
        sets.load(path)
    assert err.value.problems == [f"{path}:5: duplicate key 'generation' (first on line 3): "
                                  "YAML keeps only the last; give it once"]
    line = _one_line_refusal(capsys, ["eval", "--model", str(tmp_path), "--recipe", str(path),
                                      "--out", str(tmp_path / "out")])
    assert f"{path}:5: duplicate key 'generation'" in line and not (tmp_path / "out").exists()


def test_repeat_in_a_data_recipe_given_to_prepare(tmp_path, capsys):
    path = tmp_path / "data.yaml"
    path.write_text((RECIPES / "data" / "demo.yaml").read_text().replace("data:\n", "data:\n  dedup: true\n  dedup: false\n", 1))
    assert "dedup: false" in path.read_text()
    line = _one_line_refusal(capsys, ["prepare", str(path), "--out", str(tmp_path / "out")])
    assert f"{path}:" in line and "duplicate key 'data.dedup'" in line and not (tmp_path / "out").exists()


# ---- fault 10: model and tokenizer locations, before any rank starts -----------------------------

def _model_recipe(tmp_path, **model) -> Path:
    import yaml

    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({"base": [DEMO], "model": model, "logging": {"progress": False}}))
    return path


@pytest.mark.parametrize("where", ["/nonexistent", "~/no/such/model", "./not-written-yet",
                                   "runs/x/export", "outputs/model"])
def test_missing_model_directory_is_one_line(tmp_path, capsys, monkeypatch, where):
    """transformers said "Repo id must be in the form 'repo_name' or 'namespace/repo_name'" in a traceback."""
    (tmp_path / "outputs").mkdir()  # `outputs/model`: partly there, so a directory, not a hub id
    monkeypatch.chdir(tmp_path)
    path = _model_recipe(tmp_path, name_or_path=where)
    line = _one_line_refusal(capsys, ["train", str(path), "--run-dir", str(tmp_path / "run")])
    assert line.startswith(f"medtune: error: {path}: model.name_or_path: ")
    assert "no such directory (a local model directory must exist; a hub id is owner/name)" in line
    assert not (tmp_path / "run").exists()


def test_model_directory_without_config_json(tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    path = _model_recipe(tmp_path, name_or_path=str(tmp_path / "weights"))
    line = _one_line_refusal(capsys, ["train", str(path), "--run-dir", str(tmp_path / "run")])
    assert line == (f"medtune: error: {path}: model.name_or_path: {tmp_path / 'weights'} has no config.json: "
                    "not a Hugging Face model directory (save_pretrained writes one)")


def _cli(tmp_path, env: dict, *argv: str):
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "medtune.cli", *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf"),
                               "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), **env})
    return done, time.monotonic() - began


NO_HUB = [("offline", {"HF_HUB_OFFLINE": "1"}, "and HF_HUB_OFFLINE is set"),
          ("unreachable", {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
           "and the hub http://127.0.0.1:9 cannot be reached (")]


@pytest.mark.slow  # a `medtune train` process of its own
@pytest.mark.parametrize("case,env,why", NO_HUB, ids=[c[0] for c in NO_HUB])
def test_uncached_hub_model_without_a_hub_is_one_line_within_seconds(tmp_path, case, env, why):
    """Was: 89 lines of traceback after 62 s of retries, on every rank."""
    path = _model_recipe(tmp_path, name_or_path="meta-llama/Llama-2-7b-hf", family="llama")
    done, took = _cli(tmp_path, env, "train", str(path), "--run-dir", str(tmp_path / "run"))
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    cache = tmp_path / "hf" / "hub"
    assert err[0] == (f"medtune: error: {path}: model.name_or_path: meta-llama/Llama-2-7b-hf is not in the "
                      f"Hugging Face cache {cache} {why}" + err[0].split(why, 1)[1])
    assert err[0].endswith("download it where the hub is reachable: `hf download meta-llama/Llama-2-7b-hf "
                           "--local-dir DIR/Llama-2-7b-hf` and set model.name_or_path: DIR/Llama-2-7b-hf "
                           f"(or `hf download meta-llama/Llama-2-7b-hf` into the cache {cache})")
    assert took < 15, took
    assert not (tmp_path / "run").exists()


def test_uncached_hub_tokenizer_is_one_line_for_prepare_too(tmp_path):
    import yaml

    path = tmp_path / "tok.yaml"
    tree = yaml.safe_load((RECIPES / "models" / "tiny-llama.yaml").read_text())
    tree["model"].pop("train_tokenizer")
    tree["model"]["tokenizer"] = "someorg/med-tokenizer"
    tree["base"] = [DEMO]
    path.write_text(yaml.safe_dump(tree))
    done, took = _cli(tmp_path, {"HF_HUB_OFFLINE": "1"}, "prepare", str(path), "--out", str(tmp_path / "out"))
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert err[0].startswith(f"medtune: error: {path}: model.tokenizer: someorg/med-tokenizer is not in the "
                             "Hugging Face cache")
    assert "set model.tokenizer: DIR/med-tokenizer" in err[0] and took < 15
    assert not (tmp_path / "out").exists()


def _fake_cache(hub, repo: str, files: dict[str, str]) -> None:
    """The hub cache layout huggingface_hub writes: refs/main -> snapshots/<commit>/<file>."""
    commit = "0" * 40
    root = hub / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, text in files.items():
        (snap / name).write_text(text)


def test_cached_hub_model_needs_no_network_and_a_missing_shard_is_named(tmp_path, monkeypatch):
    from medtune.models import locations

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    index = '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    _fake_cache(hub, "org/whole", {"config.json": "{}", "tokenizer_config.json": "{}", "model.safetensors": ""})
    _fake_cache(hub, "org/half", {"config.json": "{}", "tokenizer_config.json": "{}",
                                  "model.safetensors.index.json": index,
                                  "model-00001-of-00002.safetensors": ""})
    assert locations.check_hub("org/whole", None, "model.name_or_path", True, True) is None
    msg = locations.check_hub("org/half", None, "model.name_or_path", True, True)
    assert msg.startswith(f"org/half is not in the Hugging Face cache {hub} (missing "
                          "model-00002-of-00002.safetensors) and HF_HUB_OFFLINE is set")
    assert locations.missing_from_cache("org/whole", None, weights=False, tokenizer=True) == []



@pytest.mark.parametrize("env", [{"HUGGINGFACE_HUB_CACHE": "{hub}"}, {"HF_HOME": "$MY_ROOT/hf"},
                                 {"HF_HUB_CACHE": "$MY_ROOT/hf/hub"}])
def test_cache_found_where_huggingface_hub_looks(tmp_path, monkeypatch, env):
    """huggingface_hub still honours the legacy HUGGINGFACE_HUB_CACHE and expands $VAR; medtune
    looked in ~/.cache/huggingface/hub and refused, offline, a model every rank would load."""
    from medtune.models import locations

    hub = tmp_path / "hf" / "hub"
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MY_ROOT", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(hub=hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fake_cache(hub, "org/whole", {"config.json": "{}", "tokenizer_config.json": "{}", "model.safetensors": ""})
    assert locations.hub_cache() == hub
    assert locations.check_hub("org/whole", None, "model.name_or_path", True, True) is None

# ---- found in review: the run directory's name, and aliases -----------------------------------

@pytest.mark.parametrize("name", ["..", "../elsewhere", "", "/abs/run", "team/./x", "a//b"])
def test_name_that_leaves_runs_is_refused(tmp_path, capsys, name):
    """runs/<name> is the default run directory: `name: ..` made it the working directory itself,
    `name: ''` runs/ (beside and over every other run), `../x` a folder outside runs/."""
    path = tmp_path / "r.yaml"
    path.write_text(f"base: [{TINY}, {DEMO}]\nname: {name!r}\n")
    line = _one_line_refusal(capsys, ["plan", str(path), "--nodes", "1", "--gpus-per-node", "1"])
    assert line.startswith(f"medtune: error: {path}: name: {name!r}: the default run directory is runs/<name>")


@pytest.mark.parametrize("name", ["my run 1", "team/llama2-7b"])
def test_name_inside_runs_is_accepted(tmp_path, name):
    path = tmp_path / "r.yaml"
    path.write_text(f"base: [{TINY}, {DEMO}]\nname: {name!r}\n")
    assert config.load(path).name == name


def test_recursive_anchor_is_one_line(tmp_path, capsys):
    """`extra: *t` inside `train: &t`: the duplicate-key scan recursed without end (RecursionError
    traceback, exit 1)."""
    path = tmp_path / "r.yaml"
    path.write_text(f"base: [{TINY}, {DEMO}]\ntrain: &t\n  epochs: 1\n  extra: *t\n")
    line = _one_line_refusal(capsys, ["plan", str(path), "--nodes", "1", "--gpus-per-node", "1"])
    assert line == (f"medtune: error: {path}:2:8: bad YAML: an alias inside the node it names "
                    "(a recursive anchor); a recipe is a tree")


def test_an_anchor_used_twice_reports_its_repeat_once(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("a: &s {lr: 1, lr: 2}\nb: *s\nc: *s\n")
    with pytest.raises(config.RecipeError) as err:
        config.read_yaml(path)
    assert str(err.value).count("duplicate key") == 1


def test_exponents_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads `1e-05` and `5e8` as strings: `rms_norm_eps: 1e-05` copied from a
    config.json died in transformers ("expected float, got str"), `reduce_bucket_size: 5e8` as
    DeepSpeed's docs write it was refused in two lines (LLaMA-Factory#4014 met the same)."""
    path = tmp_path / "r.yaml"
    path.write_text(f"base: [{TINY}, {DEMO}]\nmodel:\n  config: {{rms_norm_eps: 1e-05, rope_theta: 5E5}}\n"
                    "train: {lr: 2e-5, adam_eps: 1e-8}\nzero: {reduce_bucket_size: 5e8}\n")
    r = config.load(path, ["zero.prefetch_bucket_size=4.5e8"])
    assert r.model.config["rms_norm_eps"] == 1e-05 and r.model.config["rope_theta"] == 500000.0
    assert r.train.lr == 2e-05 and r.train.adam_eps == 1e-08
    assert r.zero.reduce_bucket_size == 500_000_000 and type(r.zero.reduce_bucket_size) is int
    assert r.zero.prefetch_bucket_size == 450_000_000
    assert config.read_yaml(path, "v: 1e5x\nw: e5\nx: '1e-5'\n") == {"v": "1e5x", "w": "e5", "x": "1e-5"}


@pytest.mark.parametrize("override,line", [
    ("zero.reduce_bucket_size=big", "command line: zero.reduce_bucket_size = 'big': must be a valid integer, "
                                    "unable to parse string as an integer, or must be 'auto'"),
    ("zero.max_reuse_distance=-1.5", "command line: zero.max_reuse_distance = -1.5: must be a valid integer, "
                                     "got a number with a fractional part, or must be 'auto'")])
def test_a_key_of_two_kinds_is_one_line(override, line):
    """`int | "auto"` keys gave one line per kind, named with pydantic's branch tags
    (`zero.reduce_bucket_size.int = ...` and `zero.reduce_bucket_size.literal['auto'] = ...`)."""
    with pytest.raises(config.RecipeError) as err:
        config.load(RECIPES / "demo.yaml", [override])
    assert str(err.value) == line
