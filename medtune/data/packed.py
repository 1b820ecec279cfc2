"""The training data as the ranks consume it: tokenized samples and the packs they form."""
from __future__ import annotations

from dataclasses import dataclass

from medtune.data.collator import Batch, collate
from medtune.data.packing import pack
from medtune.models.flops import FlopModel


@dataclass(frozen=True)
class PackedData:
    """The tokenized samples and their packs; every rank holds the same plan."""
    dataset: object                 # datasets.Dataset with input_ids / labels
    packs: list[list[int]]
    pack_tokens: list[int]
    pack_labels: list[int]
    pack_flops: list[float]
    """Model FLOPs of each pack (forward and backward): what the ranks of a step balance."""
    max_tokens: int
    pad_id: int

    @classmethod
    def build(cls, dataset, max_tokens: int, pad_id: int, flops: FlopModel | None = None) -> "PackedData":
        """Packs balanced in `flops` (in tokens when no FLOP model is given)."""
        lengths = list(dataset["length"])  # a datasets Column reads one row per index
        n_labels = list(dataset["n_labels"])
        cost = flops.sample if flops is not None else None
        packs = pack(lengths, max_tokens, cost)
        tokens = [sum(lengths[i] for i in p) for p in packs]
        return cls(dataset, packs, tokens, [sum(n_labels[i] for i in p) for p in packs],
                   [flops.pack(lengths[i] for i in p) for p in packs] if flops else tokens,
                   max_tokens, pad_id)

    def batch(self, pack_index: int | None) -> Batch:
        """The packed row of pack `pack_index`; for None (a rank with no pack in this slot) a
        one-token padding row with no labels, so the rank still runs the step's collectives."""
        if pack_index is None:
            return collate([], self.pad_id)
        rows = self.dataset[self.packs[pack_index]]
        return collate(list(zip(rows["input_ids"], rows["labels"])), self.pad_id)
