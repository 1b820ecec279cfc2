"""Load the recipe's tokenizer, or train a small sentencepiece one for tiny models."""
from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from medtune.config import Recipe
from medtune.base.errors import RecipeError
from medtune.data.cache import cache_root, sources_digest


def location(recipe: Recipe) -> str:
    """Where the recipe's tokenizer lives: a hub id or a local directory.

    With ``model.train_tokenizer`` and no ``model.tokenizer``, it is a
    directory in the data cache named by the vocabulary size and a hash of
    the sources, so a change of data trains a new tokenizer.
    """
    m = recipe.model
    if m.tokenizer:
        return m.tokenizer
    if m.train_tokenizer is not None:
        return str(cache_root(recipe) / "tokenizers"
                   / f"spm{m.train_tokenizer.vocab_size}-{sources_digest(recipe)}")
    return m.name_or_path


def load(recipe: Recipe):
    """The tokenizer named by the recipe (hub id or local directory), with the recipe's tokens added.

    ``model.pad_token`` and ``model.special_tokens`` are added as `add_tokens`
    says; data preparation, training and the export all load it here, so
    the ids of the added tokens are the same everywhere.
    """
    tok = load_base(recipe)
    add_tokens(tok, recipe.model)
    return tok


def load_base(recipe: Recipe):
    """The tokenizer as saved at its location, without the recipe's added tokens.

    With ``data.chat_template`` its chat template is that file's text (so the
    exported tokenizer carries it). Raises `RecipeError` for ``data.template:
    chat`` when the tokenizer has no chat template and none is given.
    """
    from transformers import AutoTokenizer

    m = recipe.model
    tok = AutoTokenizer.from_pretrained(location(recipe), revision=None if m.tokenizer else m.revision,
                                        trust_remote_code=m.trust_remote_code)
    d = recipe.data
    if d.chat_template is not None:
        tok.chat_template = Path(d.chat_template).read_text(encoding="utf-8")
    if d.template == "chat" and getattr(tok, "chat_template", None) is None:
        raise RecipeError([f"data.template = chat: the tokenizer {location(recipe)} has no chat template; "
                           "give one with data.chat_template: path/to/template.jinja, or use "
                           "data.template: paper"])
    return tok


def add_tokens(tok, model) -> list[str]:
    """Add ``model.special_tokens`` then ``model.pad_token`` to `tok` in place; the tokens new to its vocabulary.

    Special tokens are added as extra special tokens (never split, skipped by
    ``decode(..., skip_special_tokens=True)``), keeping the tokenizer's own;
    the pad token becomes ``tok.pad_token``, added only when it is not in the
    vocabulary already (``<unk>``'s id for it means it is not). New tokens
    take the ids after the last one, in the order given: ``len(tok)`` grows
    by the number returned.
    """
    before = set(tok.get_vocab())
    specials = [t for t in model.special_tokens if t]
    if specials:
        tok.add_special_tokens({"extra_special_tokens": specials}, replace_extra_special_tokens=False)
    if model.pad_token:
        tok.add_special_tokens({"pad_token": model.pad_token})
    return [t for t in dict.fromkeys([*specials, *([model.pad_token] if model.pad_token else [])])
            if t not in before]


def train_sentencepiece(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int) -> None:
    """Train a byte-fallback BPE sentencepiece model and save it as a Llama tokenizer.

    Written to a temporary directory first and renamed into place, so a
    crash never leaves a half-written tokenizer that later runs would use.
    Every text is used, however long: sentencepiece skips sentences over its
    ``max_sentence_length`` (4,192 bytes by default), and with all of them
    skipped stops with ``[!sentences_.empty()]`` (google/sentencepiece#517),
    so the limit is raised to the longest text when one is longer. Raises
    `ValueError` when there is no text at all.
    """
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    texts = list(texts)
    if not texts:
        raise ValueError("no text to train a tokenizer on")
    longest = max(len(t.encode("utf-8")) for t in texts)
    # Only when needed: the setting changes the trained model even when no text is that long.
    longer = {"max_sentence_length": longest} if longest > 4192 else {}
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=out.parent))
    try:
        # Written through model_writer, not model_prefix, so the model holds no
        # temporary path and the same data always gives the same bytes.
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, **longer,
            vocab_size=vocab_size, model_type="bpe", byte_fallback=True, split_digits=True,
            hard_vocab_limit=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            num_threads=1, minloglevel=2)
        (tmp / "tokenizer.model").write_bytes(model.getvalue())
        # transformers reads `dir/tokenizer.model`; `LlamaTokenizer(vocab_file=...)`
        # would silently give an empty 3-token vocabulary.
        tok = LlamaTokenizer.from_pretrained(str(tmp), add_bos_token=True, add_eos_token=False)
        got = len(tok)
        if got < 64:
            raise RuntimeError(f"trained tokenizer in {tmp} has only {got} tokens")
        tok.save_pretrained(str(tmp))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
