"""Evaluation recipes, the training prompt at generation, rank sharding and left-padded batching."""
from __future__ import annotations

import pytest

from medtune.config import RecipeError
from medtune.data import tokenize
from medtune.data.formats.records import Record
from medtune.data.templates import render
from medtune.evaluation import generate as gen
from medtune.evaluation import sets
from tests.conftest import RECIPES, needs_shared_data
from tests.integration.helpers import demo_tokenizer_dir, save_tiny_model


@needs_shared_data()
def test_shared_corpora_recipe_reads_its_held_out_sets():
    r = sets.load(RECIPES / "eval" / "shared-corpora.yaml")
    names = [sets.set_name(s) for s in r.sets]
    assert names == ["ncbi-disease-devel", "ncbi-disease-test", "bc5cdr-chem-test", "pubmedqa-test"]
    counts = {sets.set_name(s): len(sets.read_set(s, r.mixture_seed)[0]) for s in r.sets}
    assert counts == {"ncbi-disease-devel": 923, "ncbi-disease-test": 940, "bc5cdr-chem-test": 4797,
                      "pubmedqa-test": 500}
    samples, malformed = sets.read_set(r.sets[0], limit=3)
    assert len(samples) == 3 and malformed == 0
    assert all(s.record.instruction.startswith(("Find", "Recognise", "Your", "Mark", "Tag"))
               for s in samples)
    assert sets.paper_results()["ncbi-disease"]["7b"] == 87.18


def test_eval_recipe_errors_name_file_key_and_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sets:\n  - {path: x, format: nope, instructions: nopool, limitt: 3}\n"
                   "generation: {num_beams: 0}\n")
    with pytest.raises(RecipeError) as err:
        sets.load(bad)
    text = str(err.value)
    assert f"{bad}: unknown key 'sets.0.limitt'" in text
    assert "generation.num_beams = 0" in text
    with pytest.raises(RecipeError, match="no such evaluation recipe"):
        sets.load(tmp_path / "missing.yaml")
    bad.write_text("sets:\n  - {path: x, format: nope, instructions: nopool}\n")
    with pytest.raises(RecipeError) as err:
        sets.load(bad)
    assert "sets.0.format = 'nope': unknown reader" in str(err.value)
    assert "sets.0.instructions: unknown instruction pool 'nopool'" in str(err.value)


def test_shards_cover_every_sample_once():
    parts = [gen.shard(11, r, 3) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(11))
    assert gen.shard(5, 0, 1) == [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    return gen.load(out, device="cpu")


def test_prompt_ids_are_the_training_prompt(tiny):
    _, tok, _ = tiny
    recs = [Record("Tag every token.", "Patients with cystic fibrosis .",
                   "Patients : O\nwith : O\ncystic : B\nfibrosis : I\n. : O", "ner"),
            Record("Answer yes, no or maybe.", "Context: x\nQuestion: y?", "maybe", "pubmedqa")]
    for rec in recs:
        enc = tokenize.encode(render(rec, "paper"), tok, max_tokens=4096)
        assert gen.prompt_ids(rec, "paper", tok) == enc.input_ids[:enc.prompt_tokens]


def test_batched_left_padded_greedy_matches_one_at_a_time(tiny):
    model, tok, device = tiny
    prompts = [tok("### Instruction: a\n ### Input: b c d e f g\n ### Output:")["input_ids"],
               tok("### Output:")["input_ids"], tok("hello there")["input_ids"]]
    batched = gen.generate(model, tok, prompts, max_new_tokens=6, batch_size=3, device=device)
    single = [gen.generate(model, tok, [p], max_new_tokens=6, batch_size=1, device=device)[0]
              for p in prompts]
    assert batched == single
    beams = gen.generate(model, tok, prompts[:1], max_new_tokens=4, num_beams=2, device=device)
    assert isinstance(beams[0], str)


def test_demo_tokenizer_is_what_the_tiny_model_uses(tiny):
    from transformers import AutoTokenizer

    _, tok, _ = tiny
    assert len(tok) == len(AutoTokenizer.from_pretrained(demo_tokenizer_dir()))
