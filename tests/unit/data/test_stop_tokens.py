"""Stop tokens that match what was trained: the template's turn terminator and the tokenizer's ids.

The paper template ends every answer in the tokenizer's EOS; ChatML on a base
tokenizer (Qwen2.5 base: EOS ``<|endoftext|>``) ends it in ``<|im_end|>``. The
export's configs must list what the model learned to emit last, and carry the
tokenizer's bos/eos/pad ids whatever the model's config said (an inline Gemma
config defaults to bos/eos/pad = 2/1/0, the demo tokenizer has ``<s>`` = 1,
``</s>`` = 2 and no pad).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medtune import config
from medtune.data.formats.records import Record
from medtune.data.templates import render
from medtune.data.tokenize import IGNORE, encode, stop_token_ids
from medtune.engine import export
from medtune.models import configs
from medtune.engine import model as engine_model
from medtune.evaluation import generate as gen
from medtune.evaluation import metrics
from tests.conftest import RECIPES
from tests.integration.helpers import demo_tokenizer_dir, write_recipe

# Qwen2.5's chat template (tools left out): a default system turn, every turn
# closed by <|im_end|> and a newline.
CHATML = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
          "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
          "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Llama 2 chat: the assistant turn ends in the tokenizer's EOS.
LLAMA2 = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
          "{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}")
# A template whose assistant turn ends in no special token at all.
BARE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}")
# GLM-4's: the next role marker closes an assistant turn, so a conversation that ends with the
# answer has no terminator after it (the case huggingface/trl#5988 found untrained).
GLM = ("[gMASK]<sop>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
       "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
GEMMA = dict(model_type="gemma", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=1, head_dim=16, vocab_size=1024,
             max_position_embeddings=1024)
REC = Record("Answer yes, no or maybe.", "Context: x\nQuestion: y?", "yes", "pubmedqa")


@pytest.fixture(scope="module")
def base_dir() -> Path:
    return demo_tokenizer_dir()


@pytest.fixture(scope="module")
def chatml_dir(tmp_path_factory, base_dir) -> Path:
    """The demo tokenizer with ChatML's two special tokens and template; EOS stays ``</s>``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    out = tmp_path_factory.mktemp("chatml") / "tokenizer"
    tok.save_pretrained(out)
    return out


def _tok(path: Path, chat_template: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def _last_label(enc) -> int:
    return next(x for x in reversed(enc.labels) if x != IGNORE)


def test_paper_template_stops_on_eos(base_dir):
    tok = _tok(base_dir)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, None)
    assert stop_token_ids(tok, "paper") == [2]
    assert _last_label(encode(render(REC, "paper"), tok, 4096)) == 2


def test_chatml_turn_is_trained_up_to_im_end_and_stops_there(chatml_dir):
    tok = _tok(chatml_dir)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert (im_end, tok.eos_token_id) == (1001, 2)
    r = render(REC, "chat", tok)
    assert r.prompt.endswith("<|im_start|>assistant\n")
    # ChatML writes "yes<|im_end|>\n": the newline after the terminator is never generated
    assert r.response == "yes<|im_end|>" and not r.append_eos
    enc = encode(r, tok, 4096)
    assert _last_label(enc) == im_end == enc.input_ids[-1]
    assert tok.decode([x for x in enc.labels if x != IGNORE]) == "yes<|im_end|>"
    assert stop_token_ids(tok, "chat") == [2, im_end]


@pytest.mark.parametrize("template,response,append_eos", [
    (LLAMA2, " yes </s>", False),      # the turn ends in EOS itself
    (BARE, "yes\n\n", True),           # no special token ends the turn: EOS is appended
    (GLM, "yes", True),                # role markers are special, but none follows the answer
])
def test_other_turn_endings_stop_on_eos(base_dir, template, response, append_eos):
    tok = _tok(base_dir, template)
    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    r = render(REC, "chat", tok)
    assert (r.response, r.append_eos) == (response, append_eos)
    assert _last_label(encode(r, tok, 4096)) == 2
    assert stop_token_ids(tok, "chat") == [2]


def test_inline_gemma_config_takes_the_tokenizers_ids(chatml_dir):
    tok = _tok(chatml_dir)
    m = config.ModelConfig(config=dict(GEMMA))
    plain = engine_model.hf_config(m)
    assert (plain.bos_token_id, plain.eos_token_id, plain.pad_token_id) == (2, 1, 0)  # Gemma's defaults
    cfg = engine_model.hf_config(m, tok, stop_token_ids(tok, "chat"))
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, [2, 1001], None)
    assert configs.special_token_ids(tok, [2]) == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None}


@pytest.mark.parametrize("template", ["paper", "chat"])
def test_export_stops_on_the_last_trained_token_of_every_sample(template, chatml_dir, tmp_path):
    """A Gemma built from an inline config on the demo data: every sample's last label is a stop id."""
    from medtune.data.prepare import prepare
    from medtune.data.tokenizer import load as load_tokenizer

    recipe = config.load(write_recipe(tmp_path / "r.yaml", {
        "base": str(RECIPES / "data" / "demo.yaml"),
        "model": {"config": dict(GEMMA), "tokenizer": str(chatml_dir), "dtype": "fp32"},
        "data": {"template": template, "max_tokens": 1024},
    }))
    tok = load_tokenizer(recipe)
    prepared = prepare(recipe, log=lambda _: None)
    assert sum(s["truncated"] for s in prepared.stats["sources"].values()) == 0
    last = {next(x for x in reversed(labels) if x != IGNORE) for labels in prepared.dataset["labels"]}
    assert last == ({2} if template == "paper" else {1001})

    stops = stop_token_ids(tok, template)
    torch.manual_seed(0)
    net = engine_model.build(recipe.model, {"zero_optimization": {"stage": 0}}, torch.float32, "eager",
                             tok, stops)
    assert net.model.embed_tokens.padding_idx is None  # Gemma's pad 0 would freeze <unk>'s row
    hf = tmp_path / "run" / export.HF_DIR
    export.write_hf_dir(hf, net, tok, stops)
    out = tmp_path / "run" / "export"
    export.write({k: v.detach().clone() for k, v in net.state_dict().items()}, net, hf, out)
    for name in ("config.json", "generation_config.json"):
        saved = json.loads((out / name).read_text())
        eos = saved["eos_token_id"] if isinstance(saved["eos_token_id"], list) else [saved["eos_token_id"]]
        assert saved["bos_token_id"] == 1 and saved.get("pad_token_id") is None, name
        assert last <= set(eos) and eos[0] == 2, (name, eos)
    model, loaded_tok, _ = gen.load(out, device="cpu")
    assert gen.stop_ids(model, loaded_tok) == ([2] if template == "paper" else [2, 1001])
    assert json.loads((out / "config.json").read_text())["use_cache"] is True


class _Replay:
    """A model whose `generate` appends fixed ids, whatever it is told (a model that never
    learned to stop, or a batch row that went on after its stop token)."""

    def __init__(self, continuation: list[int]):
        self.continuation = continuation
        self.kwargs: dict = {}
        self.generation_config = None

    def generate(self, input_ids, **kwargs):
        self.kwargs = kwargs
        tail = torch.tensor([self.continuation] * input_ids.shape[0], dtype=torch.long)
        return torch.cat([input_ids, tail], dim=1)


def test_an_answer_generated_past_im_end_scores_as_the_answer(chatml_dir):
    tok = _tok(chatml_dir)
    ner = Record("Tag each token.", "Patients with fever .", "Patients : O\nwith : O\nfever : B\n. : O",
                 "ner", gold=["O", "O", "B", "O"])
    after = "\nPatients : O\nwith : B\nfever : B\n. : O"  # what a model that never stopped goes on with
    generated = (tok(ner.output, add_special_tokens=False)["input_ids"] + [1001]
                 + tok(after, add_special_tokens=False)["input_ids"])
    model = _Replay(generated)
    stops = stop_token_ids(tok, "chat")
    [answer] = gen.generate(model, tok, [gen.prompt_ids(ner, "chat", tok)], max_new_tokens=64, stop=stops)
    assert answer == ner.output
    assert model.kwargs["eos_token_id"] == [2, 1001] and model.kwargs["pad_token_id"] == 2
    # text from elsewhere with the terminator written out is cut at it too
    assert gen.cut_at_stop(ner.output + "<|im_end|>" + after, ["</s>", "<|im_end|>"]) == ner.output
    assert gen.cut_at_stop("no", ["</s>"]) == "no"
    cut = metrics.score_set("ner", [ner.input], [ner.gold], [answer]).to_dict()
    assert cut["metrics"]["f1"] == 1.0 and cut["parse"]["failures"] == 0, cut
    # decoded whole, as before: the repeated lines make the answer a parse failure
    whole = tok.decode(generated, skip_special_tokens=True).strip()
    assert whole.split() == (ner.output + after).split()
    uncut = metrics.score_set("ner", [ner.input], [ner.gold], [whole]).to_dict()
    assert uncut["parse"]["failures"] == 1, uncut


def test_generate_default_stops_on_the_exports_generation_config(chatml_dir):
    tok = _tok(chatml_dir)
    model = _Replay(tok("yes", add_special_tokens=False)["input_ids"] + [1001, 5, 6])
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(eos_token_id=[2, 1001])
    [answer] = gen.generate(model, tok, [[1, 5, 6]], max_new_tokens=8)
    assert answer == "yes" and model.kwargs["eos_token_id"] == [2, 1001]
    # a generation config naming only the turn terminator adds to the tokenizer's EOS, never
    # replaces it (Blaizzy/mlx-vlm#2112: a config's EOS replaced the tokenizer's, generation ran on)
    model.generation_config = GenerationConfig(eos_token_id=1001)
    assert gen.stop_ids(model, tok) == [2, 1001]
