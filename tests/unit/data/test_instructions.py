"""A source's own instructions (pool, list, text file), typed NER instructions that name the answers' types."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from medtune import config
from medtune.config import DataConfig, RecipeError, SourceConfig
from medtune.data import instructions, mixture, templates
from medtune.data.cache import sources_digest
from tests.conftest import RECIPES, REPO

CORPORA = REPO / "tests" / "assets" / "corpora"
TINY = RECIPES / "models" / "tiny-llama.yaml"
NOT_TYPES = {"TAG", "TYPE", "BIO"}  # the upper-case words of a typed instruction that are not entity types


def _mix(*sources: SourceConfig):
    return mixture.build(DataConfig(sources=list(sources)), progress=False)


def _recipe(tmp_path: Path, source: str, extra: dict | None = None) -> Path:
    (tmp_path / "r.yaml").write_text(f"base: [models/tiny-llama.yaml]\ndata:\n  sources:\n    - {source}\n")
    return tmp_path / "r.yaml"


def _named_types(instruction: str) -> set[str]:
    return set(re.findall(r"\b[A-Z][A-Z_]+\b", instruction)) - NOT_TYPES


def _answer_types(samples) -> set[str]:
    return {tag[2:] for s in samples for tag in s.record.gold if tag != "O"}


@pytest.mark.parametrize("corpus, pool", [("jnlpba", None), ("jnlpba", "ner-bioentity-typed"),
                                          ("i2b2_2012", None), ("i2b2_2012", "ner-clinical"),
                                          ("i2b2_2012", "ner-typed")])
def test_every_typed_source_is_told_exactly_the_types_its_answers_use(corpus, pool):
    # Before: typed JNLPBA drew the i2b2 pool (PROBLEM/TEST/TREATMENT) while its answers were PROTEIN/DNA/...
    src = SourceConfig(path=str(CORPORA / corpus), format="conll", tags="typed", name=corpus, instructions=pool)
    samples, _ = _mix(src)
    types = _answer_types(samples)
    assert types == ({"PROTEIN", "DNA", "RNA", "CELL_TYPE", "CELL_LINE"} if corpus == "jnlpba" else
                     {"PROBLEM", "TEST", "TREATMENT", "CLINICAL_DEPT", "EVIDENTIAL", "OCCURRENCE"})
    for s in samples:
        assert "{types}" not in s.record.instruction
        assert _named_types(s.record.instruction) == types, s.record.instruction


def test_the_paper_recipes_typed_sources_name_their_types(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_DATA", str(CORPORA))
    text = (RECIPES / "data" / "medtuned-full.yaml").read_text().replace("../../../shared/data", str(CORPORA))
    (tmp_path / "full.yaml").write_text(text)
    recipe = config.load(tmp_path / "full.yaml", defaults=[TINY])
    typed = [s for s in recipe.data.sources if s.tags == "typed"]
    assert typed
    samples, _ = mixture.build(recipe.data, progress=False)
    for src in typed:
        mine = [s for s in samples if s.source == src.name]
        assert mine and all(_named_types(s.record.instruction) == _answer_types(mine) for s in mine)


def test_new_pools_for_the_mixture_corpora():
    for name in ("ner-species", "ner-bioentity-typed", "ner-clinical"):
        pool = templates.POOLS[name]
        assert 3 <= len(pool) <= 10 and len(set(pool)) == len(pool)
        assert all("'token : TAG'" in text for text in pool), name
    assert all("{types}" in text for name in ("ner-typed", "ner-clinical", "ner-bioentity-typed")
               for text in templates.POOLS[name])
    assert all("species" in text.lower() or "organism" in text.lower() for text in templates.POOLS["ner-species"])


def test_a_list_of_instructions_is_drawn_from_like_a_pool():
    mine = ["Tag the diseases.", "Mark every disease token."]
    samples, _ = _mix(SourceConfig(path=str(CORPORA / "ncbi_disease"), format="conll", name="n",
                                   instructions=mine))
    assert {s.record.instruction for s in samples} <= set(mine) and len(samples) == 4
    assert [s.record.instruction for s in samples] == [templates.draw(tuple(mine), 0, "n", i) for i in range(4)]


def test_a_text_file_of_instructions_is_resolved_beside_the_recipe(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "mine.txt").write_text("\ufeffFind the diseases.\n\n  Tag disease names.  \r\n")
    shutil.copytree(CORPORA / "ncbi_disease", tmp_path / "ncbi")
    r = config.load(_recipe(tmp_path, "{path: ncbi, format: conll, instructions: prompts/mine.txt}"))
    assert r.data.sources[0].instructions == str(tmp_path / "prompts" / "mine.txt")
    samples, _ = mixture.build(r.data, progress=False)
    assert {s.record.instruction for s in samples} <= {"Find the diseases.", "Tag disease names."}
    # the cache key follows the file's lines, not its place
    before = sources_digest(r)
    (tmp_path / "prompts" / "mine.txt").write_text("Find the diseases.\nTag disease names, please.\n")
    assert sources_digest(r) != before


@pytest.mark.parametrize("spec, says", [
    ("[]", "data.sources.0.instructions: an empty list: give at least one instruction"),
    ("['ok', '  ']", "data.sources.0.instructions: item 1 is '  ': every instruction must be a non-blank string"),
    ("missing.txt", "data.sources.0.instructions: {tmp}/missing.txt: no such file"),
    ("empty.txt", "data.sources.0.instructions: {tmp}/empty.txt: holds no instruction (write one per line)"),
    ("ner-specie", "data.sources.0.instructions: unknown instruction pool 'ner-specie': did you mean 'ner-species'?"),
])
def test_bad_instructions_are_one_line_naming_the_file_and_key(tmp_path, spec, says):
    (tmp_path / "empty.txt").write_text("\n  \n")
    shutil.copytree(CORPORA / "ncbi_disease", tmp_path / "ncbi")
    path = _recipe(tmp_path, f"{{path: ncbi, format: conll, instructions: {spec}}}")
    with pytest.raises(RecipeError) as err:
        config.load(path)
    assert len(err.value.problems) == 1
    line = err.value.problems[0]
    assert line.startswith(f"{path}: ") and says.format(tmp=tmp_path) in line, line


def test_bad_instructions_exit_2_through_the_cli(tmp_path, capsys):
    from medtune.cli import main

    shutil.copytree(CORPORA / "ncbi_disease", tmp_path / "ncbi")
    path = _recipe(tmp_path, "{path: ncbi, format: conll, instructions: nowhere/x.txt}")
    assert main(["prepare", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.sources.0.instructions" in err[0] and "x.txt: no such file" in err[0]


def test_fill_and_entity_types():
    assert instructions.entity_types([("B-PROTEIN", "I-PROTEIN", "O"), ("B-DNA", "O"), ("B", "O")]) == [
        "PROTEIN", "DNA"]
    assert instructions.fill("TYPE is {types}.", ["A", "B", "C"]) == "TYPE is A, B and C."
    assert instructions.fill("TYPE is {types}.", ["A"]) == "TYPE is A."
    assert instructions.fill("keep {this}", ["A"]) == "keep {this}"


def test_an_evaluation_set_takes_the_same_list_or_file_and_names_the_types(tmp_path):
    from medtune.evaluation import sets

    (tmp_path / "mine.txt").write_text("Tag these: {types}.\n")
    shutil.copytree(CORPORA / "jnlpba", tmp_path / "jnlpba")
    (tmp_path / "jnlpba" / "test.tsv").write_text((CORPORA / "jnlpba" / "train.tsv").read_text())
    (tmp_path / "eval.yaml").write_text(
        "sets:\n  - {path: jnlpba, format: conll, tags: typed, instructions: mine.txt}\n"
        "  - {name: listed, path: jnlpba, format: conll, tags: typed, instructions: [Tag it.]}\n")
    r = sets.load(tmp_path / "eval.yaml")
    assert r.sets[0].instructions == str(tmp_path / "mine.txt")
    samples, _ = sets.read_set(r.sets[0])
    assert {s.record.instruction for s in samples} == {"Tag these: PROTEIN, CELL_TYPE, DNA, CELL_LINE and RNA."}
    assert {s.record.instruction for s in sets.read_set(r.sets[1])[0]} == {"Tag it."}
    (tmp_path / "bad.yaml").write_text("sets:\n  - {path: jnlpba, format: conll, instructions: []}\n")
    with pytest.raises(RecipeError) as err:
        sets.load(tmp_path / "bad.yaml")
    assert err.value.problems == [f"{tmp_path / 'bad.yaml'}: sets.0.instructions: an empty list: give at "
                                  "least one instruction"]
