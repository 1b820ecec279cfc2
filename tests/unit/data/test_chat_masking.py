"""Multi-turn label masking: the loss falls on every assistant turn and its terminator, nowhere else.

The labels of a 3-turn conversation are decoded run by run (each run of
labelled positions) and must equal the assistant turns plus the token that
ends each, exactly: the paper template (EOS after each answer), ChatML
(``<|im_end|>``) and Llama 3 (``<|eot_id|>``), on the demo tokenizer given each
template's special tokens (tests/assets/chat_templates).
"""
from __future__ import annotations


import pytest

from medtune.data.formats.records import Record
from medtune.data.templates import render
from medtune.data.tokenize import IGNORE, encode, encode_batch, stop_token_ids
from tests.conftest import REPO
from tests.integration.helpers import demo_tokenizer_dir

TEMPLATES = REPO / "tests" / "assets" / "chat_templates"
CONVERSATION = Record(
    "", "", "", "chat", messages=(
        ("system", "You are a careful clinician."),
        ("user", "A patient has a fever of 39 C. Is that high?"),
        ("assistant", "Yes, 39 C is a high fever."),
        ("user", "What should they take?"),
        ("assistant", "Paracetamol, and plenty of fluids."),
        ("user", "Thanks!"),
        ("assistant", "You are welcome."),
    ))
SPECIAL = {"chatml": ["<|im_start|>", "<|im_end|>"],
           "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}


def _tok(template: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_tokenizer_dir())
    assert len(tok) == 1000
    if template is not None:
        tok.add_special_tokens({"additional_special_tokens": SPECIAL[template]})
        tok.chat_template = (TEMPLATES / f"{template}.jinja").read_text()
    return tok


def _runs(enc, tok) -> list[str]:
    """The decoded text of each run of labelled positions."""
    runs, cur = [], []
    for x in enc.labels:
        if x == IGNORE:
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append(x)
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


@pytest.mark.parametrize("template,rendering,expected", [
    ("paper", "paper", ["Yes, 39 C is a high fever.</s>", "Paracetamol, and plenty of fluids.</s>",
                        "You are welcome.</s>"]),
    ("chatml", "chat", ["Yes, 39 C is a high fever.<|im_end|>", "Paracetamol, and plenty of fluids.<|im_end|>",
                        "You are welcome.<|im_end|>"]),
    ("llama3", "chat", ["Yes, 39 C is a high fever.<|eot_id|>", "Paracetamol, and plenty of fluids.<|eot_id|>",
                        "You are welcome.<|eot_id|>"]),
])
def test_three_turns_train_exactly_the_assistant_turns_and_their_terminators(template, rendering, expected):
    tok = _tok(None if template == "paper" else template)
    enc = encode(render(CONVERSATION, rendering, tok), tok, 4096)
    assert _runs(enc, tok) == expected
    # nothing of the system or user turns is trained: the unlabelled text holds them all
    prompt_text = tok.decode([i for i, x in zip(enc.input_ids, enc.labels) if x == IGNORE])
    for role, content in CONVERSATION.messages:
        if role != "assistant":
            assert content in prompt_text
    assert enc.n_labels == sum(x != IGNORE for x in enc.labels[1:])


def test_the_rendered_text_is_the_templates_own_rendering():
    tok = _tok("llama3")
    r = render(CONVERSATION, "chat", tok)
    full = tok.apply_chat_template([{"role": a, "content": b} for a, b in CONVERSATION.messages], tokenize=False)
    assert r.text == full  # Llama 3 writes nothing after the last <|eot_id|>
    assert r.prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert len(r.history) == 2


def test_the_last_turn_ends_in_a_stop_token_for_every_template():
    for template, stop in (("chatml", "<|im_end|>"), ("llama3", "<|eot_id|>")):
        tok = _tok(template)
        assert stop_token_ids(tok, "chat") == [2, tok.convert_tokens_to_ids(stop)]
        enc = encode(render(CONVERSATION, "chat", tok), tok, 4096)
        assert enc.labels[-1] == enc.input_ids[-1] == tok.convert_tokens_to_ids(stop)


def test_a_system_prompt_goes_first_when_the_conversation_has_none():
    tok = _tok("chatml")
    rec = Record("Is 39 C high?", "", "Yes.")
    r = render(rec, "chat", tok, system_prompt="You are a careful clinician.")
    assert r.prompt == ("<|im_start|>system\nYou are a careful clinician.<|im_end|>\n"
                        "<|im_start|>user\nIs 39 C high?<|im_end|>\n<|im_start|>assistant\n")
    assert r.response == "Yes.<|im_end|>"
    # a conversation with its own system turn keeps it
    r = render(CONVERSATION, "chat", tok, system_prompt="Ignored.")
    assert "Ignored." not in r.text and "careful clinician" in r.text


def test_paper_system_turn_is_a_first_line_and_one_turn_is_the_papers_format():
    tok = _tok()
    one = Record("", "", "", "chat", messages=(("user", "Tag it."), ("assistant", "A : O")))
    r = render(one, "paper", tok)
    assert (r.prompt, r.response, r.history) == ("### Instruction: Tag it.\n ### Input: \n ### Output:", " A : O", ())
    r = render(CONVERSATION, "paper", tok)
    assert r.text.startswith("You are a careful clinician.\n### Instruction: A patient has a fever")


def test_trailing_user_turns_are_dropped():
    tok = _tok("chatml")
    rec = Record("", "", "", "chat", messages=(("user", "Hi"), ("assistant", "Hello."), ("user", "Bye")))
    r = render(rec, "chat", tok)
    assert "Bye" not in r.text and r.response == "Hello.<|im_end|>"


def test_a_template_that_rewrites_earlier_turns_is_one_line():
    """A template that renders the last assistant turn unlike the others (Qwen3 drops past reasoning)."""
    tok = _tok("chatml")
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
                         "<|im_start|>assistant\n(earlier)<|im_end|>\n{% else %}<|im_start|>{{ m['role'] }}\n"
                         "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(ValueError, match=r"renders assistant turn 3 differently once later turns follow"):
        render(CONVERSATION, "chat", tok)


def test_chat_without_a_template_says_how_to_give_one():
    tok = _tok()
    with pytest.raises(ValueError, match=r"no chat template: give one with data.chat_template"):
        render(CONVERSATION, "chat", tok)


def test_a_system_prompt_under_the_paper_template_keeps_the_input_where_it_was():
    r = render(Record("Tag it.", "A b", "A : O"), "paper", _tok(), system_prompt="Be exact.")
    assert (r.prompt, r.response) == ("Be exact.\n### Instruction: Tag it.\n ### Input: A b\n ### Output:", " A : O")


@pytest.mark.parametrize("template", ["paper", "chatml", "llama3"])
@pytest.mark.parametrize("max_tokens", [4096, 40])
def test_fast_and_offset_labelling_agree_on_a_conversation(template, max_tokens):
    from tests.unit.data.test_data_tokenize import _Slow

    tok = _tok(None if template == "paper" else template)
    r = render(CONVERSATION, "paper" if template == "paper" else "chat", tok)
    [fast] = encode_batch([r], tok, max_tokens)
    [slow] = encode_batch([r], _Slow(tok), max_tokens)
    assert fast == slow
    assert fast.truncated == (max_tokens == 40)
    assert fast.n_labels == sum(1 for x in fast.labels[1:] if x != IGNORE)
