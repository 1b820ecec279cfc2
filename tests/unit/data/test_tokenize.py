"""Response-only labels in the paper's prompt format, with the tokenizer medtune trains."""
from __future__ import annotations

import pytest

from medtune.data.formats.records import Record
from medtune.data.templates import render
from medtune.data.tokenize import IGNORE, encode
from tests.integration.helpers import demo_tokenizer_dir

REC = Record("Tag each token with B, I or O.", "Patients with cystic fibrosis .",
             "Patients : O\nwith : O\ncystic : B\nfibrosis : I\n. : O", "ner")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_tokenizer_dir())


def test_trained_tokenizer_has_its_whole_vocabulary(tokenizer):
    # LlamaTokenizer(vocab_file=...) silently gives 3 tokens; ours must hold them all
    assert len(tokenizer) >= 900 and tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 2


def test_paper_prompt_format():
    r = render(REC, "paper")
    assert r.prompt + r.response == (
        "### Instruction: Tag each token with B, I or O.\n ### Input: Patients with cystic "
        "fibrosis .\n ### Output: Patients : O\nwith : O\ncystic : B\nfibrosis : I\n. : O")


def test_labels_cover_the_response_and_eos_only(tokenizer):
    r = render(REC, "paper")
    enc = encode(r, tokenizer, max_tokens=2048)
    assert enc.input_ids[0] == tokenizer.bos_token_id and enc.input_ids[-1] == tokenizer.eos_token_id
    k = enc.prompt_tokens
    assert all(x == IGNORE for x in enc.labels[:k])
    assert enc.labels[k:] == enc.input_ids[k:]
    # the prompt's tokens are exactly what tokenizing the prompt alone gives (what eval feeds)
    assert enc.input_ids[:k] == tokenizer(r.prompt)["input_ids"]
    assert tokenizer.decode(enc.labels[k:], skip_special_tokens=True).strip() == REC.output


def test_truncation_is_reported(tokenizer):
    enc = encode(render(REC, "paper"), tokenizer, max_tokens=40)
    assert enc.truncated and len(enc.input_ids) == 40 == len(enc.labels)


CHAT = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
        "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def test_chat_template_labels_only_the_assistant_turn(tokenizer):
    tokenizer.chat_template = CHAT
    r = render(REC, "chat", tokenizer)
    assert r.prompt.endswith("<|assistant|>\n") and r.response.startswith(REC.output)
    assert not r.add_special_tokens and not r.append_eos
    enc = encode(r, tokenizer, max_tokens=4096)
    k = enc.prompt_tokens
    assert enc.input_ids[:k] == tokenizer(r.prompt, add_special_tokens=False)["input_ids"]
    answer = tokenizer.decode([x for x in enc.labels if x != IGNORE])
    assert answer.startswith(REC.output) and tokenizer.eos_token in answer
