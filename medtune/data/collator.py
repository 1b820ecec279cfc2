"""Packs of tokenized samples -> model inputs for one micro-batch.

A row holds its samples back to back with ``position_ids`` restarting at 0,
no attention mask and no padding: transformers then isolates the samples
(block-diagonal causal attention)::

    samples     [a0 a1 a2] [b0 b1]
    input_ids    a0 a1 a2   b0 b1
    position_ids  0  1  2    0  1
    labels        -  -  a2   -  b1     (first label of every sample is -100)

so no position is trained to predict across a boundary. Everything the
model call needs is computed here, on the host, once per row: ``cu_seqlens``
and ``max_seqlen`` for the varlen attention kernels, and the positions whose
next token is a label (``loss_positions``, with their ``targets``), so only
those positions reach the vocabulary projection::

    labels          -  -  a2  -  b1
    loss_positions  [1, 3]      (position 1 predicts a2, position 3 predicts b1)
    targets         [a2, b1]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from medtune.data.tokenize import IGNORE


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor      # [1, L] int64
    position_ids: torch.Tensor   # [1, L] int64
    labels: torch.Tensor         # [1, L] int64, IGNORE where no loss
    cu_seqlens: torch.Tensor     # [n_samples + 1] int32
    max_seqlen: int
    loss_positions: torch.Tensor  # [1, n_label_tokens] int64: positions t with labels[t+1] set
    targets: torch.Tensor        # [n_label_tokens] int64: labels[t+1] for those positions
    n_samples: int
    n_tokens: int                # real tokens (0 for an empty slot)
    n_label_tokens: int


def collate(samples: list[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    """Concatenate ``(input_ids, labels)`` samples into one packed row.

    An empty list gives a one-token row with no label: the placeholder for an
    empty slot at the end of an epoch, so every rank still runs the step.
    """
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    cu = [0]
    for s_ids, s_labels in samples:
        ids += s_ids
        labels += [IGNORE] + list(s_labels[1:])
        pos += range(len(s_ids))
        cu.append(len(ids))
    n_tokens = len(ids)
    if not samples:
        ids, labels, pos = [pad_id], [IGNORE], [0]
    lengths = [b - a for a, b in zip(cu, cu[1:])] or [1]
    positions = [t for t in range(len(labels) - 1) if labels[t + 1] != IGNORE]
    return Batch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([pos], dtype=torch.long),
        labels=torch.tensor([labels], dtype=torch.long),
        cu_seqlens=torch.tensor(cu if samples else [0, 1], dtype=torch.int32),
        max_seqlen=max(lengths),
        loss_positions=torch.tensor([positions], dtype=torch.long).reshape(1, len(positions)),
        targets=torch.tensor([labels[t + 1] for t in positions], dtype=torch.long),
        n_samples=len(samples),
        n_tokens=n_tokens,
        n_label_tokens=len(positions),
    )
