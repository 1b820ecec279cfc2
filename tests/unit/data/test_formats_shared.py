"""The readers on the real corpora in ../shared/data: exact counts, and every sentence round-trips."""
from __future__ import annotations

import json

import pytest

from medtune.data import tasks
from medtune.data.formats import READERS, Record
from tests.conftest import SHARED_DATA, needs_shared_data

pytestmark = needs_shared_data()

# (corpus, split, sentences, mentions): ../shared/data/README.md
NER_COUNTS = [
    ("ncbi_disease", "train", 5424, 5134), ("ncbi_disease", "devel", 923, 787),
    ("ncbi_disease", "test", 940, 960),
    ("bc5cdr_chem", "train", 4560, 5203), ("bc5cdr_chem", "devel", 4581, 5347),
    ("bc5cdr_chem", "test", 4797, 5385),
]


def _gold_tags(corpus: str, split: str) -> list[tuple[str, ...]]:
    """The file's tags, read independently of the reader, untyped as the paper writes them."""
    blocks = (SHARED_DATA / corpus / f"{split}.tsv").read_text(encoding="utf-8").split("\n\n")
    return [tuple(line.split("\t")[1][0] for line in b.splitlines()) for b in blocks if b.strip()]


@pytest.mark.parametrize("corpus,split,sentences,mentions", NER_COUNTS)
def test_ner_counts_and_round_trip(corpus, split, sentences, mentions):
    records = list(READERS["conll"].read(str(SHARED_DATA / corpus), split=split))
    assert all(isinstance(r, Record) for r in records)
    assert len(records) == sentences
    assert sum(tasks.mentions(r.gold) for r in records) == mentions
    gold = _gold_tags(corpus, split)
    assert [r.gold for r in records] == gold
    for r in records:  # parse(format(sentence)) == gold tags, for every sentence
        assert tasks.parse_ner(r.output, r.input.split(" ")).tags == r.gold
        assert len(r.output.splitlines()) == len(r.input.split(" "))


def test_pubmedqa_counts_and_round_trip():
    truth = json.loads((SHARED_DATA / "pubmedqa" / "test_ground_truth.json").read_text())
    everything = json.loads((SHARED_DATA / "pubmedqa" / "ori_pqal.json").read_text())
    path = str(SHARED_DATA / "pubmedqa")
    all_ = list(READERS["pubmedqa"].read(path, split="all"))
    test = list(READERS["pubmedqa"].read(path, split="test"))
    train = list(READERS["pubmedqa"].read(path, split="train"))
    assert (len(all_), len(test), len(train), len(truth)) == (1000, 500, 500, 500)
    assert sorted(r.output for r in test) == sorted(truth.values())
    assert sorted(r.output for r in all_) == sorted(v["final_decision"] for v in everything.values())
    for r in all_:
        assert tasks.parse("pubmedqa", r.output) == r.gold == r.output
        assert tasks.parse("pubmedqa", f" {r.output.capitalize()}.") == r.gold  # as a model may write it
