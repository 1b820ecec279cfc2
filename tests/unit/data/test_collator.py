"""Packed rows: positions restart per sample, no label crosses a boundary."""
from __future__ import annotations

import torch

from medtune.data.collator import collate
from medtune.data.tokenize import IGNORE as X


def test_packed_row_matches_the_docstring():
    a = ([1, 11, 12], [X, X, 12])
    b = ([1, 21], [X, 21])
    batch = collate([a, b], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 11, 12, 1, 21]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert batch.labels.tolist() == [[X, X, 12, X, 21]]
    assert batch.cu_seqlens.tolist() == [0, 3, 5] and batch.cu_seqlens.dtype == torch.int32
    assert batch.max_seqlen == 3 and batch.n_samples == 2 and batch.n_tokens == 5
    assert batch.n_label_tokens == 2
    assert batch.loss_positions.tolist() == [[1, 3]] and batch.targets.tolist() == [12, 21]


def test_first_label_of_every_sample_is_ignored_even_if_labelled():
    batch = collate([([5, 6], [5, 6]), ([7, 8], [7, 8])], pad_id=0)
    assert batch.labels.tolist() == [[X, 6, X, 8]]


def test_empty_slot_is_one_unlabelled_token():
    batch = collate([], pad_id=3)
    assert batch.input_ids.tolist() == [[3]] and batch.labels.tolist() == [[X]]
    assert batch.n_tokens == 0 and batch.n_label_tokens == 0
    assert batch.loss_positions.shape == (1, 0) and batch.targets.shape == (0,)
