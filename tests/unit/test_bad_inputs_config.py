"""Bad, unusual and unlucky configuration (issue 14, faults 1 and 10): one line, exit 2, nothing written."""
from __future__ import annotations

import textwrap

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
