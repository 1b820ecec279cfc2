"""data.validation: seeded held-out records, explicit validation sources, and no text in both sets."""
from __future__ import annotations

import json
from pathlib import Path

from medtune.config import DataConfig, SourceConfig, ValidationConfig
from medtune.data import mixture
from tests.conftest import RECIPES

DEMO = SourceConfig(path=str(RECIPES / "data" / "demo.jsonl"), format="jsonl", name="demo")


def _keys(samples) -> set:
    return {(s.record.input, s.record.output) for s in samples}


def test_no_validation_key_gives_the_mixture_as_before():
    plain = mixture.build(DataConfig(sources=[DEMO]), progress=False)
    parts = mixture.split(DataConfig(sources=[DEMO]), progress=False)
    assert parts.validation is None and parts.train[0] == plain[0] and len(plain[0]) == 360


def test_held_out_fraction_is_seeded_disjoint_and_keeps_each_records_instruction():
    full = mixture.build(DataConfig(sources=[DEMO]), progress=False)[0]
    data = DataConfig(sources=[DEMO], validation=ValidationConfig(fraction=0.1, seed=1))
    parts = mixture.split(data, progress=False)
    train, val = parts.train[0], parts.validation[0]
    assert (len(train), len(val)) == (324, 36)
    assert not _keys(train) & _keys(val)
    assert sorted(map(repr, (s.record for s in train + val))) == sorted(repr(s.record) for s in full), \
        "a record was lost or changed"
    assert parts.train[1]["demo"].validation == 36 and parts.overlap == 0
    again = mixture.split(data, progress=False)
    assert [s.record for s in again.validation[0]] == [s.record for s in val]
    other = mixture.split(DataConfig(sources=[DEMO], validation=ValidationConfig(fraction=0.1, seed=2)),
                          progress=False)
    assert _keys(other.validation[0]) != _keys(val)


def test_explicit_validation_sources_remove_their_texts_from_training(tmp_path):
    lines = (RECIPES / "data" / "demo.jsonl").read_text().splitlines()
    new = json.dumps({"instruction": "Is aspirin an NSAID?", "input": "", "output": "yes"})
    devel = tmp_path / "devel.jsonl"
    devel.write_text("\n".join([lines[0], lines[5], lines[9], new]) + "\n")
    data = DataConfig(sources=[DEMO], validation=ValidationConfig(
        sources=[SourceConfig(path=str(devel), format="jsonl", name="devel")]))
    parts = mixture.split(data, progress=False)
    assert len(parts.validation[0]) == 4 and len(parts.train[0]) == 357
    assert parts.overlap == 3 and parts.train[1]["demo"].validation == 3
    assert not _keys(parts.train[0]) & _keys(parts.validation[0])


def test_held_out_count_leaves_every_source_a_record_to_train_on(tmp_path):
    one, three = tmp_path / "one.jsonl", tmp_path / "three.jsonl"
    rows = [json.dumps({"instruction": "Q", "input": str(i), "output": "A"}) for i in range(4)]
    one.write_text(rows[0] + "\n")
    three.write_text("\n".join(rows[1:]) + "\n")
    data = DataConfig(sources=[SourceConfig(path=str(one)), SourceConfig(path=str(three))],
                      validation=ValidationConfig(samples=5))
    parts = mixture.split(data, progress=False)
    assert [s.source for s in parts.train[0]] == ["one", "three"]
    assert len(parts.validation[0]) == 2
