"""Tokenize rendered records into ``input_ids`` and response-only ``labels``.

Worked example (paper template, a toy tokenizer, ``-`` = -100)::

    text      <s> ### Instruction: Tag it ... ### Output:  yes </s>
    input_ids   1   5 6 7 8 9 ...             31 32      40   2
    labels      -   - - - - - ...              -  -      40   2

``labels[t]`` is the token the model must produce at position ``t``; the
trainer shifts them, so position ``t-1`` predicts ``labels[t]``.
"""
from __future__ import annotations

from dataclasses import dataclass

from medtune.data.templates import Rendered

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int
    truncated: bool


def encode(r: Rendered, tokenizer, max_tokens: int) -> Encoded:
    """Tokenize one rendered record; see `encode_batch`."""
    return encode_batch([r], tokenizer, max_tokens)[0]


def encode_batch(rendered: list[Rendered], tokenizer, max_tokens: int) -> list[Encoded]:
    """Tokenize prompt+response once, label the tokens that start inside the response.

    Tokenizing the whole text (not the two halves apart) keeps the tokens
    exactly those the model sees, and the prompt's tokens are then exactly
    ``tokenizer(prompt)``, which is what generation feeds at evaluation.
    """
    out: list[Encoded] = []
    if not rendered:
        return out
    special = rendered[0].add_special_tokens
    assert all(r.add_special_tokens == special for r in rendered), "one template per batch"
    enc = tokenizer([r.prompt + r.response for r in rendered], add_special_tokens=special,
                    return_offsets_mapping=True)
    for r, ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"]):
        ids = list(ids)
        boundary = len(r.prompt)
        labels = [tok if start >= boundary and end > start else IGNORE
                  for tok, (start, end) in zip(ids, offsets)]
        if r.append_eos:
            ids.append(tokenizer.eos_token_id)
            labels.append(tokenizer.eos_token_id)
        prompt_tokens = next((i for i, lab in enumerate(labels) if lab != IGNORE), len(ids))
        out.append(Encoded(ids[:max_tokens], labels[:max_tokens], prompt_tokens, len(ids) > max_tokens))
    return out
