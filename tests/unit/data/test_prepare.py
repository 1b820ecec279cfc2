"""Preparing data: counts of truncated and dropped samples, cache hits, malformed lines."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtune import config
from medtune.config import RecipeError
from medtune.data.prepare import prepare, sample_limit
from tests.conftest import RECIPES


def _recipe(*overrides):
    # the demo's data without its held-out validation set: these tests count the training samples
    return config.load(RECIPES / "demo.yaml", ["data.validation=null", "train.eval_every=0", "train.best_metric=null",
                                               *overrides])


def test_truncate_and_drop_are_counted():
    base = prepare(_recipe(), log=lambda _: None).stats
    longest = max(json.loads(line)["output"].count("\n") for line in
                  (RECIPES / "data" / "demo.jsonl").read_text().splitlines())
    assert longest > 0
    cut = prepare(_recipe("data.max_tokens=190"), log=lambda _: None)
    dropped = prepare(_recipe("data.max_tokens=190", "data.overlong=drop"), log=lambda _: None)
    t, d = cut.stats["sources"]["demo"], dropped.stats["sources"]["demo"]
    assert t["truncated"] > 0 and t["dropped"] == 0 and cut.stats["samples"] == base["samples"]
    assert d["dropped"] == t["truncated"] and dropped.stats["samples"] == base["samples"] - d["dropped"]
    assert max(cut.dataset["length"]) == 190 and max(dropped.dataset["length"]) <= 190


def test_second_prepare_is_a_cache_hit():
    first = prepare(_recipe("data.max_tokens=700"), log=lambda _: None)
    again = prepare(_recipe("data.max_tokens=700"), log=lambda _: None)
    assert again.cache_hit and again.fingerprint == first.fingerprint
    assert again.dataset["input_ids"] == first.dataset["input_ids"]


def test_malformed_lines_are_skipped_counted_and_located(tmp_path):
    good = (RECIPES / "data" / "demo.jsonl").read_text().splitlines()[:5]
    bad = ['{"instruction": "x", "output": ""}', "{not json", '{"output": "y"}']
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(good[:2] + bad + good[2:]) + "\n")
    seen = []
    p = prepare(_recipe(f"data.sources=[{{path: {f}, format: jsonl}}]"), log=seen.append)
    st = p.stats["sources"]["mixed"]
    assert st["records"] == 5 and st["malformed"] == 3 and p.stats["samples"] == 5
    assert [s.split(": ")[0] for s in seen] == ["skipped malformed record"] * 3
    assert f"{f}:3: empty output" in seen[0] and f"{f}:4: bad JSON" in seen[1]
    assert f"{f}:5: missing string field 'instruction'" in seen[2]


# ---- data.strict is checked on a cache hit too ----

def test_strict_refuses_data_that_was_prepared_without_it(tmp_path):
    good = (RECIPES / "data" / "demo.jsonl").read_text().splitlines()[:5]
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(good[:2] + ['{"instruction": "x", "output": 7}'] + good[2:]) + "\n")
    source = f"data.sources=[{{path: {f}, format: jsonl}}]"
    lenient = prepare(_recipe(source), log=lambda _: None)
    assert lenient.stats["sources"]["mixed"]["malformed"] == 1  # the cache now holds this data
    with pytest.raises(RecipeError) as err:
        prepare(_recipe(source, "data.strict=true"), "r.yaml", log=lambda _: None)
    assert err.value.problems == [
        f"r.yaml: data.strict = true: 1 malformed record(s) in source 'mixed': {f}:3: 'output' must be a "
        "string, not int; fix them, or set data.strict: false to skip and count them"]
    again = prepare(_recipe(source), log=lambda _: None)  # the cache itself is untouched
    assert again.cache_hit and again.fingerprint == lenient.fingerprint


# ---- samples longer than the model's context ----

def _long_data(tmp_path) -> Path:
    """Five demo records and one of 1,349 tokens (as in the issue: 1,480 on a 1,024-token model)."""
    rows = (RECIPES / "data" / "demo.jsonl").read_text().splitlines()[:5]
    long = {"instruction": "Summarise the findings.", "input": "A long report.",
            "output": " ".join(f"finding {i} was noted." for i in range(180))}
    f = tmp_path / "long.jsonl"
    f.write_text("\n".join(rows + [json.dumps(long)]) + "\n")
    return f


def _context_recipe(f: Path, context: int, *overrides):
    return _recipe(f"data.sources=[{{path: {f}, format: jsonl}}]", "data.max_tokens=2048",
                   f"model.config.max_position_embeddings={context}", *overrides)


def test_a_sample_longer_than_the_model_context_is_truncated_and_counted(tmp_path):
    f = _long_data(tmp_path)
    roomy = prepare(_context_recipe(f, 4096), log=lambda _: None)
    longest = max(roomy.dataset["length"])
    assert longest == 1349 and roomy.stats["sources"]["long"]["truncated"] == 0
    seen: list[str] = []
    p = prepare(_context_recipe(f, 1024), log=seen.append)
    assert max(p.dataset["length"]) == 1024 and p.stats["samples"] == 6
    assert p.stats["sources"]["long"]["truncated"] == 1
    assert (p.stats["max_tokens"], p.stats["model_context"], p.stats["sample_tokens"]) == (2048, 1024, 1024)
    assert seen == ["samples are limited to 1024 tokens: the model's context, max_position_embeddings = 1024, "
                    "is below data.max_tokens = 2048; 1 longer sample(s) truncated (data.overlong)"]
    dropped = prepare(_context_recipe(f, 1024, "data.overlong=drop"), log=lambda _: None)
    assert dropped.stats["samples"] == 5 and dropped.stats["sources"]["long"]["dropped"] == 1
    assert max(dropped.dataset["length"]) < 1024


def test_a_prompt_longer_than_the_model_context_is_refused_naming_both_lengths(tmp_path):
    with pytest.raises(RecipeError) as err:
        prepare(_context_recipe(RECIPES / "data" / "demo.jsonl", 100), "r.yaml", log=lambda _: None)
    (line,) = err.value.problems
    assert line.startswith("r.yaml: data.overlong = truncate: a prompt of source 'demo' has ")
    assert line.endswith("tokens, leaving no room for its answer in the 100 a sample may have (the model's "
                         "context, max_position_embeddings = 100, is below data.max_tokens = 2048); "
                         "set data.overlong: drop")


def test_the_sample_limit_reads_the_config_of_a_model_directory(tmp_path):
    """Sliding-window and RoPE-scaled models: the limit is max_position_embeddings, as the issue asks."""
    mistral = {"model_type": "mistral", "max_position_embeddings": 32768, "sliding_window": 4096}
    llama = {"model_type": "llama", "max_position_embeddings": 131072,
             "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0}}
    for name, cfg, max_tokens, want in (("m", mistral, 65536, 32768), ("l", llama, 4096, 4096)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
        tree = {"model": {"name_or_path": str(tmp_path / name)},
                "data": {"sources": [{"path": str(RECIPES / "data" / "demo.jsonl"), "format": "jsonl"}],
                         "max_tokens": max_tokens}}
        limit = sample_limit(config.validate(tree, {}, "r.yaml"))
        assert (limit.tokens, limit.context) == (want, cfg["max_position_embeddings"]), name


def test_a_tokenizer_trains_on_texts_longer_than_sentencepieces_default_limit(tmp_path):
    """google/sentencepiece#517: with every text over 4,192 bytes it stopped with [!sentences_.empty()]."""
    from transformers import AutoTokenizer

    from medtune.data.tokenizer import train_sentencepiece

    texts = [" ".join(f"word{j % 50} sentence {i}." for j in range(500)) for i in range(20)]
    assert min(len(t.encode()) for t in texts) > 4192
    train_sentencepiece(texts, tmp_path / "tok", 300)
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert tok.decode(tok(texts[3], add_special_tokens=False)["input_ids"]) == texts[3]
    with pytest.raises(ValueError, match="no text to train a tokenizer on"):
        train_sentencepiece([], tmp_path / "none", 300)
    assert not (tmp_path / "none").exists()


def test_the_cache_is_written_without_hashing_the_table(monkeypatch, tmp_path):
    """Our cache key is the fingerprint: datasets never pickles the whole table with dill.

    On the lent H200 (pyarrow 26, Python 3.12) that pickling failed outright
    (``Can't pickle <class 'MonthDayNano'>``), so every prepare there died.
    """
    import datasets.arrow_dataset

    def refuse(*_):
        raise AssertionError("datasets hashed the whole table")
    monkeypatch.setattr(datasets.arrow_dataset, "generate_fingerprint", refuse)
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path))  # a cold cache: the build runs
    p = prepare(_recipe(), log=lambda _: None)
    assert not p.cache_hit and len(p.dataset) == 360
