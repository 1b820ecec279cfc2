"""One generic loader (YAML, `base:`, dotted overrides with list indices, provenance) for training and
evaluation recipes, and the resume marks in the schema."""
from __future__ import annotations

import json

import pytest
import yaml

from medtune import config
from medtune.base.errors import RecipeError
from medtune.engine.resume import training_fields
from medtune.evaluation import sets
from tests.conftest import RECIPES

DEMO_DATA = RECIPES / "data" / "demo.jsonl"


@pytest.fixture
def two_sources(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({
        "base": str(RECIPES / "demo.yaml"),
        "data": {"sources": [{"path": str(DEMO_DATA), "format": "jsonl", "name": "first"},
                             {"path": str(DEMO_DATA), "format": "jsonl", "name": "second"}]}}))
    return path


# ---------------------------------------------------------------- list-index overrides

def test_a_list_index_override_sets_one_item(two_sources):
    """hydra#376 / hydra#789 / anemoi-inference#201: ``foo.0=x`` overrides one list element."""
    r = config.load(two_sources, ["data.sources.1.weight=2", "data.sources.0.cap=5"])
    assert [(s.name, s.weight, s.cap) for s in r.data.sources] == [("first", 1.0, 5), ("second", 2.0, None)]


def test_an_override_value_may_hold_an_equals_sign(two_sources):
    """omegaconf#56 / hydra#266: ``key=a=b`` sets ``a=b``, split at the first ``=`` only."""
    r = config.load(two_sources, ["data.sources.0.name=a=b"])
    assert r.data.sources[0].name == "a=b"


def test_an_index_past_the_end_is_one_line_naming_the_override(two_sources):
    with pytest.raises(RecipeError) as err:
        config.load(two_sources, ["data.sources.2.weight=2"])
    assert err.value.problems == ["command line: override 'data.sources.2.weight=2': data.sources is a list of "
                                  "2 items; index it with 0..1"]
    with pytest.raises(RecipeError) as err:
        config.load(two_sources, ["data.sources.first.weight=2"])
    assert err.value.problems == ["command line: override 'data.sources.first.weight=2': data.sources is a list "
                                  "of 2 items; index it with 0..1"]


def test_provenance_of_an_indexed_override_and_of_its_neighbours(two_sources):
    """The overridden key names the command line; a bad key beside it in the same item, the file."""
    text = two_sources.read_text().replace("name: first", "name: first\n    wieght: 3")
    two_sources.write_text(text)
    with pytest.raises(RecipeError) as err:
        config.load(two_sources, ["data.sources.0.weight=-1"])
    assert sorted(err.value.problems) == sorted([
        "command line: data.sources.0.weight = -1: must be greater than 0",
        f"{two_sources}: unknown key 'data.sources.0.wieght': did you mean 'weight'?"])


# ---------------------------------------------------------------- evaluation recipes

@pytest.fixture
def eval_base(tmp_path):
    (tmp_path / "sub").mkdir()
    base = tmp_path / "sub" / "base.yaml"
    base.write_text("sets:\n  - {name: a, path: corpus, format: conll, split: test}\n"
                    "  - {name: b, path: ../other, format: pubmedqa}\n"
                    "generation: {max_new_tokens: 64, num_beams: 1}\n")
    return base


def test_an_evaluation_recipe_builds_on_a_base(tmp_path, eval_base):
    child = tmp_path / "child.yaml"
    child.write_text("base: sub/base.yaml\ngeneration: {num_beams: 2}\nmixture_seed: 3\n")
    r = sets.load(child)
    assert [s.path for s in r.sets] == [str(tmp_path / "sub" / "corpus"), str(tmp_path / "other")]
    assert (r.generation.max_new_tokens, r.generation.num_beams, r.mixture_seed) == (64, 2, 3)


def test_an_evaluation_recipe_finds_a_base_under_recipes(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: eval/shared-slice.yaml\n")
    r = sets.load(child)
    assert [sets.set_name(s) for s in r.sets] == ["ncbi-disease-test", "bc5cdr-chem-test", "pubmedqa-test"]
    assert r.sets[0].path == str((RECIPES.parent.parent / "shared" / "data" / "ncbi_disease").resolve())


def test_evaluation_overrides_take_dotted_keys_and_list_indices(eval_base):
    r = sets.load(eval_base, ["sets.1.limit=3", "generation.batch_size=2", "template=chat"])
    assert (r.sets[0].limit, r.sets[1].limit, r.generation.batch_size, r.template) == (None, 3, 2, "chat")


def test_evaluation_problems_name_the_file_that_set_the_key(tmp_path, eval_base):
    eval_base.write_text(eval_base.read_text().replace("format: pubmedqa", "format: nope"))
    child = tmp_path / "child.yaml"
    child.write_text("base: sub/base.yaml\ngeneration: {num_beams: 0}\n")
    with pytest.raises(RecipeError) as err:
        sets.load(child, ["generation.batch_size=0"])
    assert sorted(err.value.problems) == sorted([
        f"{child}: generation.num_beams = 0: must be greater than or equal to 1",
        "command line: generation.batch_size = 0: must be greater than or equal to 1"])
    with pytest.raises(RecipeError) as err:
        sets.load(child)
    assert [p.split(" = ")[0] for p in err.value.problems] == [f"{child}: generation.num_beams"]
    child.write_text("base: sub/base.yaml\n")
    with pytest.raises(RecipeError) as err:
        sets.load(child)
    assert err.value.problems[0].startswith(f"{eval_base}: sets.1.format = 'nope': unknown reader")


# ---------------------------------------------------------------- resume marks

SKIPPED_BEFORE = {"name", "launch", "logging", "zero", "data.cache_dir", "train.save_every", "train.keep_last",
                  "train.export", "train.max_bad_steps", "kernels", "model.gradient_checkpointing",
                  "data.validation", "train.eval_every", "train.eval_tasks", "train.eval_tasks_limit",
                  "train.best_metric", "train.best_mode"}
"""What engine/checkpoint.py's `training_fields` listed as not training-relevant before the marks
(the last six: evaluation during training, issue 17)."""


def _training_fields_before(recipe) -> dict:
    """`training_fields` as it was (medtune 7c73a10): a walk with its own skip list."""
    out = {}

    def walk(node, prefix):
        for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
            key = f"{prefix}{k}"
            if key in SKIPPED_BEFORE:
                continue
            if isinstance(v, (dict, list)) and v and key != "model.config":
                walk(v, key + ".")
            else:
                out[key] = v
    walk(config.to_dict(recipe), "")
    return json.loads(json.dumps(out))


def test_the_schema_marks_exactly_the_fields_checkpoint_skipped():
    kinds = config.resume_fields(config.Recipe)
    free = {k for k, v in kinds.items() if v == "free"}
    topmost = {k for k in free if k.rpartition(".")[0] not in free}
    assert topmost == SKIPPED_BEFORE
    assert set(kinds.values()) == {"free", "refuse"}
    assert kinds["data.sources.*.weight"] == "refuse" and kinds["zero.hierarchy"] == "free"


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_training_fields_are_what_they_were(name):
    recipe = config.load(RECIPES / name, check_files=False)
    assert training_fields(recipe) == _training_fields_before(recipe)


def test_training_fields_are_what_they_were_with_every_kind_of_value(two_sources):
    recipe = config.load(two_sources, ["data.sources.0.include=[a, b]", "train.adam_betas=[0.8, 0.95]",
                                       "data.cache_dir=/tmp/x", "zero.hierarchy=off"])
    fields = training_fields(recipe)
    assert fields == _training_fields_before(recipe)
    assert fields["data.sources.0.include.1"] == "b" and fields["train.adam_betas.0"] == 0.8
    assert "data.cache_dir" not in fields and not any(k.startswith("zero") for k in fields)


def test_medtune_eval_takes_dotted_overrides_with_one_line_errors(tmp_path, eval_base, capsys):
    from medtune import cli

    code = cli.main(["eval", "--model", str(tmp_path), "--recipe", str(eval_base), "--out",
                     str(tmp_path / "out"), "sets.0.limit=0", "--num-beams", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and sorted(err) == [
        "medtune: error: command line: generation.num_beams = 0: must be greater than or equal to 1",
        "medtune: error: command line: sets.0.limit = 0: must be greater than or equal to 1"]
    assert not (tmp_path / "out").exists()
