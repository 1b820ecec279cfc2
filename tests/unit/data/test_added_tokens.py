"""model.pad_token and model.special_tokens: the tokenizer, the data cache, the grown model, the export.

Public reports these tests turn into inputs:
- huggingface/transformers#25977 (PR #26024) and #32170 (PR #32192): after resize_token_embeddings under
  ZeRO-3 the lm_head or config.vocab_size came out 0 / the old size -> the grown model's config and both
  layers must have the new row count (here in one process; under 2-rank ZeRO-3 in
  tests/integration/test_added_tokens_zero3.py).
- huggingface/transformers#3366: added special tokens' ids changed after save and load -> the export's
  tokenizer reloads with the same ids, pad token and length.
- mlabonne/llm-course#33: pad_token = eos_token and the model never learned to stop (its collator masked
  every pad, so every EOS) -> with model.pad_token set to the EOS, the EOS ending each answer is still a label.
"""
from __future__ import annotations

import json

import pytest
import torch

from medtune import config
from medtune.data.prepare import fingerprint, prepare
from medtune.data.tokenize import IGNORE, stop_token_ids
from medtune.data.tokenizer import add_tokens, load, load_base
from medtune.engine import export
from medtune.engine import model as engine_model
from tests.conftest import RECIPES
from tests.integration.helpers import write_recipe

ADDED = ["<|query|>", "<|answer|>"]
STAGE0 = {"zero_optimization": {"stage": 0}}


def _recipe(tmp_path, **model):
    return config.load(write_recipe(tmp_path / "r.yaml", {
        "base": str(RECIPES / "demo.yaml"), "model": model,
        "data": {"cache_dir": str(tmp_path / "cache")}}))


@pytest.fixture(scope="module")
def trained_tokenizer(tmp_path_factory):
    """The demo's 1,000-token sentencepiece tokenizer, trained once into a module cache."""
    tmp = tmp_path_factory.mktemp("tok")
    recipe = _recipe(tmp)
    prepare(recipe, log=lambda _: None)
    return tmp


def _with(trained_tokenizer, tmp_path, **model):
    r = _recipe(tmp_path, **model)
    import dataclasses
    return dataclasses.replace(r, data=dataclasses.replace(r.data, cache_dir=str(trained_tokenizer / "cache")))


def test_added_tokens_take_the_next_ids_and_are_never_split(trained_tokenizer, tmp_path):
    r = _with(trained_tokenizer, tmp_path, special_tokens=ADDED, pad_token="<pad>")
    base = load_base(r)
    assert len(base) == 1000 and base.pad_token is None
    tok = load(r)
    assert len(tok) == 1003
    assert tok.convert_tokens_to_ids([*ADDED, "<pad>"]) == [1000, 1001, 1002] and tok.pad_token_id == 1002
    ids = tok("a <|query|> b<|answer|>", add_special_tokens=False).input_ids
    assert 1000 in ids and 1001 in ids
    assert "<|query|>" not in tok.decode(ids, skip_special_tokens=True)
    # a pad token already in the vocabulary is named, not added
    again = load_base(r)
    from types import SimpleNamespace
    assert add_tokens(again, SimpleNamespace(special_tokens=[], pad_token="</s>")) == []
    assert len(again) == 1000 and again.pad_token_id == again.eos_token_id == 2


def test_the_cache_key_changes_with_the_added_tokens(trained_tokenizer, tmp_path):
    plain = _with(trained_tokenizer, tmp_path)
    one = _with(trained_tokenizer, tmp_path, special_tokens=ADDED[:1])
    two = _with(trained_tokenizer, tmp_path, special_tokens=ADDED)
    padded = _with(trained_tokenizer, tmp_path, special_tokens=ADDED, pad_token="<pad>")
    keys = [fingerprint(r) for r in (plain, one, two, padded)]
    assert len(set(keys)) == 4


def test_data_is_prepared_with_the_added_tokens(trained_tokenizer, tmp_path):
    r = _with(trained_tokenizer, tmp_path, special_tokens=ADDED)
    import dataclasses
    src = dataclasses.replace(r.data.sources[0], instructions=["<|query|> Answer the task. <|answer|>"])
    r = dataclasses.replace(r, data=dataclasses.replace(r.data, sources=[src]))
    p = prepare(r, log=lambda _: None)
    first = p.dataset[0]["input_ids"]
    assert first.count(1000) == 1 and first.count(1001) == 1


def test_pad_token_set_to_eos_still_trains_the_eos(trained_tokenizer, tmp_path):
    r = _with(trained_tokenizer, tmp_path, pad_token="</s>")
    p = prepare(r, log=lambda _: None)
    for labels in p.dataset.select(range(20))["labels"]:
        assert [x for x in labels if x != IGNORE][-1] == 2  # every answer ends in a labelled EOS


def _build(recipe, tok, rows=None, seed=0):
    torch.manual_seed(seed)
    return engine_model.build(recipe.model, STAGE0, torch.float32, "eager", tok,
                              stop_token_ids(tok, "paper"), rows)


def test_new_rows_are_the_mean_of_the_old_and_old_rows_are_kept(trained_tokenizer, tmp_path):
    r = _with(trained_tokenizer, tmp_path, special_tokens=ADDED, pad_token="<pad>")
    tok = load(r)
    plain = _build(r, load_base(r))
    grown = _build(r, tok, rows=len(tok))
    assert grown.config.vocab_size == 1003 and grown.config.pad_token_id == 1002
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        old, new = plain.state_dict()[name], grown.state_dict()[name]
        assert tuple(old.shape) == (1000, 64) and tuple(new.shape) == (1003, 64), name
        assert torch.equal(new[:1000], old), name
        mean, spread = old.mean(0), old.std(0)
        # transformers draws N(mean, 1e-9 cov): the mean within 1e-3 of the rows' spread
        assert ((new[1000:] - mean).abs() <= 1e-3 * spread + 1e-7).all(), name
        assert not torch.allclose(new[1000:], torch.zeros_like(new[1000:])), name
    ids = torch.tensor([[1, 1000, 5, 1001]])
    assert grown(input_ids=ids).logits.shape == (1, 4, 1003)


def test_the_export_tokenizer_reloads_with_its_ids_and_batches(trained_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    for pad in (None, "<pad>"):
        r = _with(trained_tokenizer, tmp_path, special_tokens=ADDED, **({"pad_token": pad} if pad else {}))
        tok = load(r)
        net = _build(r, tok, rows=len(tok))
        hf = tmp_path / f"hf-{pad}"
        export.write_hf_dir(hf, net, tok, stop_token_ids(tok, "paper"))
        back = AutoTokenizer.from_pretrained(hf)
        assert len(back) == len(tok) and back.convert_tokens_to_ids(ADDED) == [1000, 1001]
        assert back.padding_side == "left" and back.pad_token == (pad or "</s>")
        batch = back(["short", "a much longer prompt than that"], padding=True, return_tensors="pt")
        assert batch.input_ids.shape[0] == 2 and batch.attention_mask[0, 0] == 0
        saved = json.loads((hf / "config.json").read_text())
        assert saved["vocab_size"] == len(tok)
        assert saved.get("pad_token_id") == (1002 if pad else None)  # the configs keep the trained pad id
        assert tok.pad_token == pad  # the training tokenizer was not changed
