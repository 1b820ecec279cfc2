"""PackedData: the data part's view of the tokenized samples as packs (the trainer only reads it)."""
from __future__ import annotations

import ast
from pathlib import Path

from datasets import Dataset

from medtune.data.packed import PackedData
from medtune.engine import trainer

PACKAGE = Path(__file__).resolve().parents[3] / "medtune"


def _dataset() -> Dataset:
    ids = [[1, 2, 3], [4, 5, 6, 7, 8], [9, 10], [11, 12, 13, 14]]
    labels = [[-100, 2, 3], [-100, -100, 6, 7, 8], [-100, 10], [-100, -100, -100, 14]]
    return Dataset.from_dict({"input_ids": ids, "labels": labels, "length": [len(i) for i in ids],
                              "n_labels": [sum(x != -100 for x in row) for row in labels]})


def test_packs_hold_every_sample_once_within_the_budget():
    data = PackedData.build(_dataset(), max_tokens=8, pad_id=0)
    assert sorted(i for p in data.packs for i in p) == [0, 1, 2, 3]
    assert all(t <= 8 for t in data.pack_tokens) and sum(data.pack_tokens) == 14
    assert sum(data.pack_labels) == 2 + 3 + 1 + 1
    assert data.pack_flops == data.pack_tokens  # no FLOP model: balanced in tokens


def test_a_pack_is_one_row_and_no_pack_a_padding_row_without_labels():
    data = PackedData.build(_dataset(), max_tokens=8, pad_id=0)
    assert data.packs == [[0, 3], [1, 2]]
    first = data.batch(0)
    assert first.input_ids.tolist() == [[1, 2, 3, 11, 12, 13, 14]] and first.n_label_tokens == 3
    assert first.position_ids.tolist() == [[0, 1, 2, 0, 1, 2, 3]]
    empty = data.batch(None)
    assert empty.n_samples == 0 and empty.n_label_tokens == 0 and empty.labels.tolist() == [[-100]]


def test_the_trainer_reads_packed_data_from_the_data_part():
    tree = ast.parse((PACKAGE / "engine" / "trainer.py").read_text())
    assert "PackedData" not in {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert trainer.PackedData is PackedData
