"""Mixtures: instruction pools, seeded draws independent of order, weight/cap, dedup, fingerprints."""
from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import yaml

from medtune import config
from medtune.config import DataConfig, SourceConfig
from medtune.data import mixture, templates
from medtune.data.prepare import fingerprint
from tests.conftest import RECIPES, REPO

CORPORA = REPO / "tests" / "assets" / "corpora"
NCBI = SourceConfig(path=str(CORPORA / "ncbi_disease"), format="conll", name="ncbi",
                    instructions="ner-disease")
MEDNLI = SourceConfig(path=str(CORPORA / "mednli"), format="mednli", name="mednli")


def _mix(*sources: SourceConfig, **data) -> tuple[list[mixture.Sample], dict]:
    return mixture.build(DataConfig(sources=list(sources), **data), progress=False)


def test_pools_hold_three_to_ten_distinct_paraphrases_and_cover_every_corpus_task():
    from medtune.data.tasks import TASKS

    for name, pool in templates.POOLS.items():
        assert 3 <= len(pool) <= 10 and len(set(pool)) == len(pool), name
    assert set(TASKS) <= set(templates.POOLS)
    for name in ("ner", "ner-disease", "ner-chemical", "ner-gene", "ner-bioentity"):
        assert all("'token : TAG'" in text for text in templates.POOLS[name]), name


def test_draws_are_seeded_spread_and_independent_of_order():
    draws = [templates.pick_instruction("nli", 0, "mednli", i) for i in range(400)]
    assert set(draws) == set(templates.POOLS["nli"])       # every paraphrase gets used
    assert draws == [templates.pick_instruction("nli", 0, "mednli", i) for i in range(400)]
    assert draws != [templates.pick_instruction("nli", 1, "mednli", i) for i in range(400)]
    assert draws[::-1] == [templates.pick_instruction("nli", 0, "mednli", i) for i in reversed(range(400))]


def test_mixture_is_deterministic_and_a_source_does_not_depend_on_its_neighbours():
    a, _ = _mix(NCBI, MEDNLI)
    b, _ = _mix(MEDNLI, NCBI)
    again, _ = _mix(NCBI, MEDNLI)
    assert a == again
    assert [s for s in a if s.source == "ncbi"] == [s for s in b if s.source == "ncbi"]
    assert all(s.record.instruction in templates.POOLS["ner-disease"] for s in a if s.source == "ncbi")
    assert all(s.record.instruction in templates.POOLS["nli"] for s in a if s.source == "mednli")
    other, _ = _mix(NCBI, MEDNLI, mixture_seed=7)
    assert [s.record.instruction for s in other] != [s.record.instruction for s in a]
    assert [s.record.output for s in other] == [s.record.output for s in a]


def test_generic_sources_keep_their_instructions_unless_a_pool_is_named():
    path = str(CORPORA / "pmc_llama")
    own, _ = _mix(SourceConfig(path=path, format="jsonl", name="pmc"))
    assert [s.record.instruction for s in own][:2] == ["Explain the term briefly.", "Answer the question."]
    pooled, _ = _mix(SourceConfig(path=path, format="jsonl", name="pmc", instructions="pubmedqa"))
    assert all(s.record.instruction in templates.POOLS["pubmedqa"] for s in pooled)


def test_weight_and_cap():
    base, _ = _mix(MEDNLI)
    double, st = _mix(replace(MEDNLI, weight=2.0))
    assert len(double) == 2 * len(base) == st["mednli"].samples == 10
    assert [s.record.input for s in double[:5]] == [s.record.input for s in double[5:]]
    # each copy draws its own instruction (copy number is part of the draw)
    assert [s.record.instruction for s in double[5:]] == [
        templates.pick_instruction("nli", 0, "mednli", i, copy=1) for i in range(5)]
    half, _ = _mix(replace(MEDNLI, weight=0.4))
    assert len(half) == 2 and set(s.record.input for s in half) <= set(s.record.input for s in base)
    capped, _ = _mix(replace(MEDNLI, weight=3.0, cap=7))
    assert len(capped) == 7 and capped == _mix(replace(MEDNLI, weight=3.0, cap=7))[0]


def test_exact_duplicates_are_removed_and_counted_against_the_repeating_source(tmp_path):
    shutil.copytree(CORPORA / "mednli", tmp_path / "copy")
    with open(tmp_path / "copy" / "mli_train_v1.jsonl", "a") as fh:  # one more, new pair
        fh.write('{"sentence1": "Afebrile.", "sentence2": "No fever.", "gold_label": "entailment"}\n')
    again = SourceConfig(path=str(tmp_path / "copy"), format="mednli", name="again")
    samples, stats = _mix(MEDNLI, again)
    assert stats["mednli"].duplicates == 0 and stats["again"].records == 6
    assert stats["again"].duplicates == 5 and stats["again"].samples == 1
    assert len({(s.record.input, s.record.output) for s in samples}) == len(samples) == 6
    kept, stats = _mix(MEDNLI, again, dedup=False)
    assert len(kept) == 11 and stats["again"].duplicates == 0


def test_include_keeps_listed_origins_and_counts_them():
    src = SourceConfig(path=str(CORPORA / "pmc_llama"), format="jsonl", name="pmc",
                       include=["study_design", "pharmacology"])
    samples, stats = _mix(src)
    assert [s.record.source for s in samples] == ["study_design", "pharmacology"]
    assert stats["pmc"].origins == {"study_design": 1, "pharmacology": 1}


def _fp(tmp_path, **changes) -> str:
    data = {"sources": [{"path": str(CORPORA / "mednli"), "format": "mednli", "name": "mednli"}]}
    for key, value in changes.items():
        if key.startswith("src_"):
            data["sources"][0][key[4:]] = value
        else:
            data[key] = value
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump({"data": data}))
    return fingerprint(config.load(f, defaults=[RECIPES / "models" / "tiny-llama.yaml"]))


def test_fingerprint_covers_what_changes_the_tokens(tmp_path):
    base = _fp(tmp_path)
    assert _fp(tmp_path) == base
    for change in ({"src_weight": 2.0}, {"src_cap": 3}, {"src_split": "dev"}, {"src_instructions": "hoc"},
                   {"mixture_seed": 1}, {"dedup": False}, {"max_tokens": 512}, {"src_name": "nli2"}):
        if change == {"src_split": "dev"}:
            (tmp_path / "dev").mkdir(exist_ok=True)
            shutil.copy(CORPORA / "mednli" / "mli_train_v1.jsonl", tmp_path / "dev" / "mli_dev_v1.jsonl")
            change = {"src_split": "dev", "src_path": str(tmp_path / "dev")}
        assert _fp(tmp_path, **change) != base, change
    for change in ({"seed": 5}, {"strict": True}):  # packing order and strictness: same tokens
        assert _fp(tmp_path, **change) == base, change


@pytest.mark.parametrize("weight", [0.5, 1.0, 2.5])
def test_select_keeps_reading_order_within_each_copy(weight):
    pairs = mixture._select(10, SourceConfig(path="x", weight=weight), "x", 0)
    assert len(pairs) == round(weight * 10)
    for copy in {c for _, c in pairs}:
        idx = [i for i, c in pairs if c == copy]
        assert idx == sorted(idx)
