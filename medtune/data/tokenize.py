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
    n_labels: int = 0
    """Labelled positions after the first (the trainer ignores every sample's first label)."""


def encode(r: Rendered, tokenizer, max_tokens: int) -> Encoded:
    """Tokenize one rendered record; see `encode_batch`."""
    return encode_batch([r], tokenizer, max_tokens)[0]


def encode_batch(rendered: list[Rendered], tokenizer, max_tokens: int) -> list[Encoded]:
    """Tokenize each rendered text once, label the tokens that start inside a response.

    Tokenizing the whole text (not the pieces apart) keeps the tokens
    exactly those the model sees, and the prompt's tokens are then exactly
    ``tokenizer(prompt)``, which is what generation feeds at evaluation.
    A token is labelled when it starts inside a response (every assistant
    turn of a conversation, `Rendered.spans`) and is not a special token the
    tokenizer added; a token straddling a prompt and its response is not.
    With a fast (Rust) tokenizer each boundary is found with one
    ``char_to_token`` call instead of a pass over every token's offsets.
    """
    if not rendered:
        return []
    special = rendered[0].add_special_tokens
    assert all(r.add_special_tokens == special for r in rendered), "one template per batch"
    texts = [r.text for r in rendered]
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(texts, add_special_tokens=special, return_attention_mask=False,
                        return_token_type_ids=False)
        return [_fast(r, ids, e, tokenizer, max_tokens)
                for r, ids, e in zip(rendered, enc["input_ids"], enc.encodings)]
    enc = tokenizer(texts, add_special_tokens=special, return_offsets_mapping=True)
    return [_by_offsets(r, ids, offsets, tokenizer, max_tokens)
            for r, ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"])]


def _token_at(e, char: int, n: int) -> int:
    """The first token that starts at or after character `char` (`n` when none)."""
    k = e.char_to_token(char)
    if k is None:  # the character belongs to no token (a normaliser dropped it)
        return next((i for i, span in enumerate(e.offsets) if span[0] >= char and span[1] > span[0]), n)
    if e.token_to_chars(k)[0] < char:  # a token straddling the boundary
        k += 1
    return k


def _fast(r: Rendered, ids: list[int], e, tokenizer, max_tokens: int) -> Encoded:
    # `ids` is this call's own list: extended and cut in place (200k records
    # hold tens of millions of ids, so every avoided copy counts).
    n = len(ids)
    *earlier, (last_start, _) = r.spans()
    spans = [(_token_at(e, a, n), _token_at(e, b, n)) for a, b in earlier]  # labelled positions, [start, stop)
    k = _token_at(e, last_start, n)
    end = n
    while end > k and e.token_to_chars(end - 1) is None:  # special tokens the tokenizer appended
        end -= 1
    spans.append((k, end))
    labels = [IGNORE] * n
    for a, b in spans:
        labels[a:b] = ids[a:b]
    if r.append_eos:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
        spans = spans[:-1] + [(k, n + 1)] if end == n else spans + [(n, n + 1)]
    n_labels = sum(max(0, min(b, max_tokens) - max(a, 1)) for a, b in spans)
    truncated = len(ids) > max_tokens
    if truncated:
        del ids[max_tokens:]
        del labels[max_tokens:]
    first = spans[0][0]
    return Encoded(ids, labels, first, truncated, n_labels)


def _by_offsets(r: Rendered, ids: list[int], offsets, tokenizer, max_tokens: int) -> Encoded:
    ids = list(ids)
    spans = r.spans()
    labels = [tok if end > start and any(a <= start < b for a, b in spans) else IGNORE
              for tok, (start, end) in zip(ids, offsets)]
    if r.append_eos:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    prompt_tokens = next((i for i, lab in enumerate(labels) if lab != IGNORE), len(ids))
    n_labels = sum(1 for x in labels[1:max_tokens] if x != IGNORE)
    return Encoded(ids[:max_tokens], labels[:max_tokens], prompt_tokens, len(ids) > max_tokens, n_labels)


# Conversations of different answer shapes (a label, tagged lines, free text)
# whose tokenized labels show which token ends an assistant turn.
_PROBES = (("Answer yes, no or maybe.", "Is this a probe?", "yes"),
           ("Tag each token.", "Patients with fever .", "Patients : O\nwith : O\nfever : B\n. : O"),
           ("Describe the finding.", "", "A small effusion, no other finding."))


def stop_token_ids(tokenizer, template: str) -> list[int]:
    """The ids generation must stop on: the tokenizer's EOS, then every token that ends a trained answer.

    Derived from what training does, not from the template's text: probe
    conversations are rendered (`medtune.data.templates.render`) and encoded
    as training encodes them, and the last labelled id of each is the token
    the model learns to emit last. The paper template gives ``[eos]``; ChatML
    on a base tokenizer (Qwen2.5 base: EOS ``<|endoftext|>``) gives
    ``[eos, id of <|im_end|>]``. Raises `ValueError` when the template cannot
    render (``chat`` on a tokenizer without a chat template).
    """
    from medtune.data.formats.records import Record
    from medtune.data.templates import render

    stops = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    for instruction, text, output in _PROBES:
        enc = encode(render(Record(instruction, text, output), template, tokenizer), tokenizer, 1 << 20)
        last = next(x for x in reversed(enc.labels) if x != IGNORE)
        if last not in stops:
            stops.append(last)
    return stops
