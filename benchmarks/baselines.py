"""What the benchmarks compare medtune against: batches padded to their longest sample."""
from __future__ import annotations

import torch

from medtune.data.tokenize import IGNORE


def pad_to_longest(rows: list[tuple[list[int], list[int]]]) -> dict:
    """One right-padded batch of ``(input_ids, labels)`` samples, as a Trainer without packing builds it.

    ``labels`` keep the first label of each sample ignored, as medtune's
    collator does; ``keep`` marks the positions that predict a label and
    ``targets`` lists those labels (for heads that project those positions only).
    """
    longest = max(len(x) for x, _ in rows)
    ids = torch.zeros(len(rows), longest, dtype=torch.long)
    labels = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for r, (x, y) in enumerate(rows):
        ids[r, :len(x)] = torch.tensor(x)
        labels[r, 1:len(y)] = torch.tensor(y[1:])
        mask[r, :len(x)] = 1
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "keep": keep,
            "targets": labels[:, 1:][keep[:, :-1]], "lengths": [len(x) for x, _ in rows],
            "n_tokens": int(mask.sum()), "n_slots": ids.numel()}
