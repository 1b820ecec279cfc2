"""`medtune inspect`: the resolved recipe with provenance, masked samples, per-source counts, lengths, packing."""
from __future__ import annotations

import re
import shutil

import pytest

from medtune.data.inspect import GREEN, marked, report
from tests.conftest import RECIPES, REPO
from tests.integration.helpers import write_recipe

CORPORA = REPO / "tests" / "assets" / "corpora"


def _inspect(*args, **kw) -> str:
    lines: list[str] = []
    report(*args, out=lines.append, color=kw.pop("color", False), **kw)
    return "\n".join(lines)


def test_demo_names_its_source_with_its_count_and_shows_masked_samples():
    text = _inspect(str(RECIPES / "demo.yaml"), ["train.lr=1e-4"], n=2)
    # the resolved recipe, each key with the file that set it
    assert re.search(r"^  train\.lr = 0\.0001 +command line$", text, re.M)
    assert re.search(r"^  train\.epochs = 3 +\S*recipes/demo\.yaml$", text, re.M)
    assert re.search(r"^  data\.max_tokens = 1024 +\S*recipes/data/demo\.yaml$", text, re.M)
    assert re.search(r"^  model\.train_tokenizer\.vocab_size = 1000 +\S*recipes/models/tiny-llama\.yaml$", text, re.M)
    assert re.search(r"^  train\.seed = 42 +default$", text, re.M)
    # two samples, the answer (and its EOS) bracketed, the prompt not
    shown = re.findall(r"^--- demo #(\d+) \((\d+) tokens, (\d+) with loss", text, re.M)
    assert [s[0] for s in shown] == ["0", "1"]
    first = text.split("--- demo #0", 1)[1].split("--- demo #1", 1)[0]
    assert first.count("[[") == 1 and "### Output:[[ " in first and first.rstrip().endswith("</s>]]")
    assert "### Instruction:" in first.split("[[")[0]
    # per-source counts and lengths, packing fill
    # the demo holds out 5% for validation (data.validation): round(0.05 * 360) = 18
    assert re.search(r"^demo +360 +0 +0 +18 +342 +\d+ +[\d.]+ +\d+$", text, re.M)
    assert re.search(r"^validation \(data\.validation\): 18 samples, \d+ tokens", text, re.M)
    assert re.search(r"packs of 1024: fill \d+\.\d%; \d+ optimizer steps per epoch at 2 rank\(s\) x 2", text)
    assert "nothing launched" in text


def test_a_two_source_recipe_names_each_source_with_its_count(tmp_path):
    import torch.distributed as dist

    for name in ("ncbi_disease", "mednli"):
        shutil.copytree(CORPORA / name, tmp_path / name)
    recipe = write_recipe(tmp_path / "two.yaml", {
        "base": ["models/tiny-llama.yaml", "data/demo.yaml"],
        "data": {"sources": [{"path": "ncbi_disease", "format": "conll", "name": "ncbi"},
                             {"path": "mednli", "format": "mednli", "weight": 2.0}]}})
    text = _inspect(str(recipe), n=1)
    assert re.search(r"^ncbi +4 +0 +0 +0 +4 ", text, re.M)
    assert re.search(r"^mednli +5 +0 +0 +0 +10 ", text, re.M)
    assert re.search(r"^all +14 ", text, re.M)
    assert re.search(r"^  data\.sources\.1\.weight = 2\.0 +\S*two\.yaml$", text, re.M)
    ncbi = text.split("--- ncbi #0", 1)[1].split("--- mednli", 1)[0]
    assert re.search(r"\[\[ \S+ : [BIO]\n", ncbi)  # the tag lines are the answer
    assert "--- mednli #4 " in text  # the first sample of the second source
    assert not dist.is_available() or not dist.is_initialized()


def test_color_on_a_terminal_marks_with_ansi_not_brackets():
    from medtune import config
    from medtune.data.tokenizer import load

    tok = load(config.load(RECIPES / "demo.yaml"))
    ids = tok("### Output: yes").input_ids + [tok.eos_token_id]
    labels = [-100] * (len(ids) - 2) + ids[-2:]
    plain = marked(ids, labels, tok, color=False)
    assert plain.endswith("[[ yes</s>]]") and plain.startswith("<s>")
    colored = marked(ids, labels, tok, color=True)
    assert GREEN in colored and "[[" not in colored and colored.replace(GREEN, "[[").replace("\033[0m", "]]") == plain


def test_the_cli_verb_prints_it_and_exits_0(capsys):
    from medtune.cli import main

    assert main(["inspect", str(RECIPES / "demo.yaml"), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "--- demo #0 " in out and "[[" in out and "--- demo #1 " not in out


def test_a_bad_recipe_is_one_line_exit_2(tmp_path, capsys):
    from medtune.cli import main

    recipe = write_recipe(tmp_path / "bad.yaml", {"base": str(RECIPES / "demo.yaml"),
                                                 "data": {"sources": [{"path": "nope.jsonl"}]}})
    assert main(["inspect", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.sources.0.path" in err[0]


def test_a_messages_file_shows_every_assistant_turn_masked_and_its_count(tmp_path):
    """Issue 18, done-means 4: ``medtune inspect`` on an OpenAI ``messages`` file (ChatML)."""
    from tests.unit.data.test_formats_tables import CHATML, save_chatml_tokenizer

    tok = save_chatml_tokenizer(tmp_path / "chatml-tok")
    recipe = write_recipe(tmp_path / "chat.yaml", {
        "base": ["models/tiny-llama.yaml"],
        "model": {"tokenizer": str(tok), "config": {"vocab_size": 1024}},
        "data": {"sources": [{"path": str(CORPORA / "messages" / "train.jsonl"), "format": "messages",
                              "name": "clinic-chats"}],
                 "template": "chat", "chat_template": str(CHATML), "max_tokens": 256}})
    text = _inspect(str(recipe), n=3)
    assert re.search(r"^clinic-chats +3 +0 +0 +0 +3 ", text, re.M)
    first = text.split("--- clinic-chats #0", 1)[1].split("--- clinic-chats #1", 1)[0]
    # the two assistant turns and their terminators carry the loss; system and user turns do not
    assert re.findall(r"\[\[(.*?)\]\]", first, re.S) == ["Yes, 39 C is a high fever.<|im_end|>",
                                                         "Paracetamol, and plenty of fluids.<|im_end|>"]
    assert "A patient has a fever of 39 C. Is that high?" in first.split("[[")[0]
    assert "data cache:" in text and "nothing launched" in text
