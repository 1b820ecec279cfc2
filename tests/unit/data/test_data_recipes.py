"""Every data recipe: its header, its schema, and a full prepare on the synthetic corpora.

The paper recipes name corpora we cannot ship under ``$MEDTUNE_DATA``, and
recipes check that every source file exists before any work. Here
``MEDTUNE_DATA`` points at ``tests/assets/corpora`` (synthetic files in the
documented layout) and ``../shared/data`` at the same folder, so each recipe
validates and ``medtuned-full`` prepares end to end without the real data.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from medtune import config
from medtune.config import RecipeError
from medtune.data.formats import READERS
from medtune.data.prepare import prepare
from medtune.data.templates import POOLS
from tests.conftest import RECIPES, REPO, SHARED_DATA, needs_shared_data

CORPORA = REPO / "tests" / "assets" / "corpora"
DATA_RECIPES = sorted((RECIPES / "data").glob("*.yaml"))
TINY = RECIPES / "models" / "tiny-llama.yaml"
PAPER = ["medtuned-full.yaml", "medtuned-tasks-only.yaml", "ner-only.yaml"]


def test_the_data_recipes_exist_and_each_starts_with_the_command_that_runs_it():
    assert {p.name for p in DATA_RECIPES} >= {"demo.yaml", "shared-corpora.yaml", *PAPER}
    for p in DATA_RECIPES:
        header = [ln for ln in p.read_text().splitlines() if ln.startswith("#")]
        assert p.read_text().startswith("#"), p.name
        assert any(f"medtune prepare recipes/data/{p.name}" in ln for ln in header), p.name


def _on_fixtures(name: str, tmp_path: Path, monkeypatch) -> Path:
    """The recipe with ../shared/data and $MEDTUNE_DATA both pointing at the synthetic corpora."""
    monkeypatch.setenv("MEDTUNE_DATA", str(CORPORA))
    text = (RECIPES / "data" / name).read_text().replace("../../../shared/data", str(CORPORA))
    out = tmp_path / name
    out.write_text(text)
    return out


@pytest.mark.parametrize("name", PAPER)
def test_paper_recipes_validate_against_the_documented_layout(name, tmp_path, monkeypatch):
    recipe = config.load(_on_fixtures(name, tmp_path, monkeypatch), defaults=[TINY])
    for src in recipe.data.sources:
        assert src.format in READERS and src.instructions in (None, *POOLS)
        assert Path(src.path).is_relative_to(CORPORA)
    formats = {s.format for s in recipe.data.sources}
    assert formats == ({"conll"} if name == "ner-only.yaml" else
                       {"conll", "i2b2-2010-re", "gad", "mednli", "hoc", "pubmedqa"}
                       | ({"jsonl"} if name == "medtuned-full.yaml" else set()))


@pytest.mark.parametrize("name", PAPER)
def test_paper_recipes_without_medtune_data_name_the_variable(name, monkeypatch):
    monkeypatch.delenv("MEDTUNE_DATA", raising=False)
    with pytest.raises(RecipeError) as err:
        config.load(RECIPES / "data" / name, defaults=[TINY])
    problems = [p for p in err.value.problems if "MEDTUNE_DATA" in p]
    assert problems and all("$MEDTUNE_DATA is not set (export MEDTUNE_DATA=" in p for p in problems)


def test_medtuned_full_prepares_on_the_synthetic_corpora(tmp_path, monkeypatch):
    recipe = config.load(_on_fixtures("medtuned-full.yaml", tmp_path, monkeypatch), defaults=[TINY])
    p = prepare(recipe, log=lambda _: None)
    s = p.stats
    records = {name: st["records"] for name, st in s["sources"].items()}
    assert records == {"ncbi-disease": 4, "bc5cdr-disease": 3, "bc5cdr-chem": 3, "bc2gm": 3, "jnlpba": 4,
                       "i2b2-2012": 4, "i2b2-2010-re": 9, "gad": 4, "mednli": 5, "hoc": 4, "pubmedqa": 2,
                       "chatdoctor": 2, "pmc-llama": 3}
    assert set(s["tasks"]) == {"ner", "ner-typed", "re-i2b2", "re-gad", "nli", "hoc", "pubmedqa", "open-qa"}
    assert s["samples"] == len(p.dataset) == sum(records.values())  # no duplicates, nothing dropped
    assert set(p.dataset.column_names) == {"input_ids", "labels", "length", "n_labels", "source", "task"}
    assert (p.path / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0 < s["packing_fill"] <= 1


def test_demo_data_recipe_prepares_alone():
    p = prepare(config.load(RECIPES / "data" / "demo.yaml", defaults=[TINY]), log=lambda _: None)
    assert p.stats["samples"] == 360 and p.stats["sources"]["demo"]["duplicates"] == 0


@needs_shared_data()
def test_shared_corpora_recipe_points_at_the_shared_folder():
    recipe = config.load(RECIPES / "data" / "shared-corpora.yaml", defaults=[TINY])
    assert [Path(s.path) for s in recipe.data.sources] == [
        SHARED_DATA.resolve() / "ncbi_disease", SHARED_DATA.resolve() / "bc5cdr_chem",
        SHARED_DATA.resolve() / "pubmedqa"]
    assert all(s.split == "train" for s in recipe.data.sources)


# ---- the released data set: nlpie/Llama2-MedTuned-Instructions, read from a local file of its columns ----

RELEASED = RECIPES / "data" / "llama2-medtuned-instructions.yaml"
RELEASED_ROWS = [
    {"instruction": "Tag the diseases.", "input": "Fever and cough .", "output": "Fever : B\nand : O\ncough : B\n. : O",
     "source": "ncbi"},
    {"instruction": "Tag the diseases.", "input": "Fever and cough .", "output": "Fever : B\nand : O\ncough : B\n. : O",
     "source": "ncbi"},  # released twice: kept twice (dedup off)
    {"instruction": "Tag the chemicals.", "input": "Aspirin helps .", "output": "Aspirin : B\nhelps : O\n. : O",
     "source": "bc5cdr"},
    {"instruction": "Answer yes, no or maybe.", "input": "Question: Does it work?", "output": "yes",
     "source": "pubmedqa"},
]


def _released_on(tmp_path: Path, include: list[str] | None = None):
    """The data recipe with its hub id swapped for a local parquet file of the release's columns."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(RELEASED_ROWS), f)
    recipe = config.load(RELEASED, defaults=[TINY])
    [src] = recipe.data.sources
    assert (src.path, src.format, src.revision) == ("nlpie/Llama2-MedTuned-Instructions", "hub",
                                                     "f6baf1d14c364a9cb97e72e22428a54b0a59afc1")
    assert recipe.data.dedup is False and recipe.data.template == "paper"
    src = dataclasses.replace(src, path=str(f), include=include)
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, sources=[src]))


def test_the_released_data_keeps_every_row_and_counts_each_origin(tmp_path):
    p = prepare(_released_on(tmp_path), log=lambda _: None)
    st = p.stats["sources"]["llama2-medtuned"]
    assert (st["records"], st["duplicates"], st["samples"]) == (4, 0, 4)
    assert st["origins"] == {"ncbi": 2, "bc5cdr": 1, "pubmedqa": 1}


def test_the_released_data_source_column_works_with_include(tmp_path):
    p = prepare(_released_on(tmp_path, include=["bc5cdr", "pubmedqa"]), log=lambda _: None)
    st = p.stats["sources"]["llama2-medtuned"]
    assert (st["records"], st["samples"], st["origins"]) == (2, 2, {"bc5cdr": 1, "pubmedqa": 1})
