"""The fast labelling path (one char_to_token per record) equals labelling by every token's offsets."""
from __future__ import annotations

import pytest

from medtune.config import DataConfig, SourceConfig
from medtune.data import mixture, templates, tokenize
from tests.conftest import REPO
from tests.integration.helpers import demo_tokenizer_dir

CORPORA = REPO / "tests" / "assets" / "corpora"


class _Slow:
    """The same tokenizer seen as a slow one: encode_batch then labels by offsets."""

    def __init__(self, tok):
        self._tok = tok
        self.is_fast = False
        self.eos_token_id = tok.eos_token_id

    def __call__(self, *args, **kwargs):
        return self._tok(*args, **kwargs)


def _records():
    sources = [SourceConfig(path=str(CORPORA / d), format=f, name=d)
               for d, f in (("ncbi_disease", "conll"), ("i2b2_2010_re", "i2b2-2010-re"), ("hoc", "hoc"),
                            ("mednli", "mednli"), ("pubmedqa", "pubmedqa"), ("pmc_llama", "jsonl"))]
    sources.append(SourceConfig(path=str(REPO / "recipes" / "data" / "demo.jsonl"), format="jsonl"))
    samples, _ = mixture.build(DataConfig(sources=sources), progress=False)
    return [s.record for s in samples]


@pytest.mark.parametrize("add_eos_token", [False, True])
@pytest.mark.parametrize("max_tokens", [4096, 60])
def test_fast_and_offset_labelling_agree(add_eos_token, max_tokens):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_tokenizer_dir(), add_eos_token=add_eos_token)
    assert tok.is_fast
    rendered = [templates.render(r, "paper") for r in _records()]
    fast = tokenize.encode_batch(rendered, tok, max_tokens)
    slow = tokenize.encode_batch(rendered, _Slow(tok), max_tokens)
    assert fast == slow
    assert any(e.truncated for e in fast) == (max_tokens == 60)
    for e in fast:
        assert e.n_labels == sum(1 for x in e.labels[1:] if x != tokenize.IGNORE)
