"""Bring your own data: every format on every file type `datasets` reads, with exact counts and one-line errors.

Fixtures are written into the test's tmp_path (parquet, arrow and saved
datasets by `datasets`/pyarrow themselves). Each source is read by its reader
and, all together in one recipe, prepared with a ChatML tokenizer and
``data.chat_template``; counts are exact. Bad rows are one line naming the
file and the row. Inputs taken from public reports:

- hiyouga/LlamaFactory#2529 (glaive function-calling ShareGPT: ``function_call``
  and ``observation`` turns ended in ``ValueError: Invalid role tag`` with a
  traceback): here one line naming the file, row, turn and role;
- axolotl-ai-cloud/axolotl#1761 (ShareGPT through a chat template: only the
  last assistant message trained) and axolotl#3088 / PR #3098 (multi-turn
  ``messages`` with ``<think>`` in the answers, every label masked): every
  assistant turn of these conversations is trained, and only those;
- axolotl-ai-cloud/axolotl#2089 (Mistral ``[INST]`` template: the EOS after
  each answer not found, turn indices -1): each turn's ``</s>`` is trained;
- pandas-dev/pandas#32084 (and modelscope/ms-swift#306, "fix csv nan bug"):
  a CSV answer ``None``/``NA``/``null`` must stay text, not become a missing value.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtune import config
from medtune.config import RecipeError
from medtune.data.formats import READERS, Malformed, SourceError
from medtune.data.prepare import prepare
from medtune.data.templates import render
from medtune.data.tokenize import IGNORE, encode
from tests.conftest import REPO, RECIPES
from tests.integration.helpers import demo_tokenizer_dir

CHATML = REPO / "tests" / "assets" / "chat_templates" / "chatml.jinja"
CONVS = [json.loads(line)["messages"] for line in
         (REPO / "tests" / "assets" / "corpora" / "messages" / "train.jsonl").read_text().splitlines()]
_FROM = {"system": "system", "user": "human", "assistant": "gpt"}
SHAREGPT = [{"conversations": [{"from": _FROM[t["role"]], "value": t["content"]} for t in c]} for c in CONVS]
PAIRS = [{"prompt": "Expand the abbreviation COPD.", "completion": "Chronic obstructive pulmonary disease."},
         {"prompt": "Which organ produces insulin?", "completion": "The pancreas."}]
QA = [{"question": "Which hallmarks does the text discuss?", "answer": "None"},
      {"question": "Give the gene's allele.", "answer": "NA"},
      {"question": "What is returned for a missing value?", "answer": "null"},
      {"question": "Which code is it?", "answer": "007"}]
TABLE = [{"question": "Is aspirin an NSAID?", "context": "Aspirin inhibits COX enzymes.", "answer": "Yes."},
         {"question": "Is insulin a steroid?", "context": "Insulin is a peptide hormone.", "answer": "No."},
         {"question": "Is warfarin an anticoagulant?", "context": "", "answer": "Yes."}]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _csv(path: Path, rows: list[dict]) -> Path:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _arrow(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def _saved(path: Path, rows: list[dict]) -> Path:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return write_fixtures(tmp_path_factory.mktemp("own-data"))


def write_fixtures(d: Path) -> dict[str, Path]:
    """One small file (or folder, or glob) per format and file type in `d`, by name."""
    messages = [{"messages": c, "source": "clinic"} for c in CONVS]
    (d / "shards").mkdir()
    _jsonl(d / "shards" / "part-0.jsonl", messages[:2])
    _jsonl(d / "shards" / "part-1.jsonl", messages[2:])
    (d / "split").mkdir()
    _csv(d / "split" / "train.csv", PAIRS)
    _csv(d / "split" / "test.csv", PAIRS[:1])
    return {
        "messages.jsonl": _jsonl(d / "messages.jsonl", messages),
        "messages.json": Path(d / "messages.json").write_text(json.dumps(messages, indent=1)) and d / "messages.json",
        "messages.parquet": _parquet(d / "messages.parquet", messages),
        "messages.arrow": _arrow(d / "messages.arrow", messages),
        "messages-saved": _saved(d / "messages-saved", messages),
        "messages-glob": d / "shards" / "*.jsonl",
        "sharegpt.json": Path(d / "sharegpt.json").write_text(json.dumps(SHAREGPT)) and d / "sharegpt.json",
        "sharegpt.parquet": _parquet(d / "sharegpt.parquet", SHAREGPT),
        "pairs.csv": _csv(d / "pairs.csv", PAIRS),
        "pairs.parquet": _parquet(d / "pairs.parquet", PAIRS),
        "pairs-folder": d / "split",
        "qa.csv": _csv(d / "qa.csv", QA),
        "table.parquet": _parquet(d / "table.parquet", TABLE),
        "table.jsonl": _jsonl(d / "table.jsonl", TABLE),
    }


MAPPED = {"instruction": "question", "input": "context", "output": "answer"}
# (fixture, format, options, records)
CASES = [
    ("messages.jsonl", "messages", {}, 3),
    ("messages.json", "messages", {}, 3),
    ("messages.parquet", "messages", {}, 3),
    ("messages.arrow", "messages", {}, 3),
    ("messages-saved", "messages", {}, 3),
    ("messages-glob", "messages", {}, 3),
    ("sharegpt.json", "sharegpt", {}, 3),
    ("sharegpt.parquet", "sharegpt", {}, 3),
    ("pairs.csv", "prompt_completion", {}, 2),
    ("pairs.parquet", "prompt_completion", {}, 2),
    ("pairs-folder", "prompt_completion", {}, 2),
    ("qa.csv", "hub", {"columns": {"input": "question", "output": "answer"},
                       "instruction": "Answer the question."}, 4),
    ("table.parquet", "hub", {"columns": MAPPED}, 3),
    ("table.jsonl", "jsonl", {"columns": MAPPED}, 3),
]


def _name(case) -> str:
    return f"{case[1]}-{case[0]}".replace(".", "-")


@pytest.mark.parametrize("case", CASES, ids=[_name(c) for c in CASES])
def test_every_format_reads_every_file_type(files, case):
    fixture, fmt, options, count = case
    items = list(READERS[fmt].read(str(files[fixture]), **options))
    assert [type(x).__name__ for x in items] == ["Record"] * count, items
    if fmt in ("messages", "sharegpt"):
        assert [r.messages for r in items] == [tuple((t["role"], t["content"]) for t in c) for c in CONVS]
        assert items[0].source == ("clinic" if fmt == "messages" else None)
    if fmt == "prompt_completion":
        assert [(r.instruction, r.output) for r in items] == [(p["prompt"], p["completion"]) for p in PAIRS]
    if fixture == "qa.csv":  # pandas would read None, NA and null as missing and 007 as 7
        assert [r.output for r in items] == ["None", "NA", "null", "007"]
        assert {r.instruction for r in items} == {"Answer the question."}
        assert items[0].input == QA[0]["question"]
    if fixture.startswith("table"):
        assert [(r.instruction, r.input, r.output) for r in items] == \
            [(t["question"], t["context"], t["answer"]) for t in TABLE]


@pytest.fixture(scope="module")
def chatml_tokenizer(tmp_path_factory) -> Path:
    return save_chatml_tokenizer(tmp_path_factory.mktemp("chatml-tok"))


def save_chatml_tokenizer(out: Path) -> Path:
    """The demo tokenizer (1,000 tokens) with ChatML's two special tokens and no chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_tokenizer_dir())
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    assert len(tok) == 1002
    tok.save_pretrained(out)  # no chat template: data.chat_template gives it
    return out


def mixture_recipe(files: dict[str, Path], tokenizer: Path, cases=CASES, **data):
    sources = [{"name": _name(c), "path": str(files[c[0]]), "format": c[1], **c[2]} for c in cases]
    overrides = [f"model.tokenizer={tokenizer}", "model.config.vocab_size=1024",
                 f"data.sources={json.dumps(sources)}", "data.template=chat",
                 f"data.chat_template={CHATML}", "data.max_tokens=512", "data.dedup=false",
                 "data.validation=null", "train.eval_every=0"]  # the demo holds 5% out; counts of whole files
    overrides += [f"data.{k}={v}" for k, v in data.items()]
    return config.load(RECIPES / "demo.yaml", overrides)


def test_a_mixture_of_every_format_and_file_type_prepares_with_exact_counts(files, chatml_tokenizer):
    p = prepare(mixture_recipe(files, chatml_tokenizer), log=lambda _: None)
    got = {name: (st["records"], st["samples"], st["malformed"]) for name, st in p.stats["sources"].items()}
    assert got == {_name(c): (c[3], c[3], 0) for c in CASES}
    assert p.stats["samples"] == sum(c[3] for c in CASES) == 40
    assert p.stats["sources"]["messages-messages-jsonl"]["origins"] == {"clinic": 3}
    # a 2-turn conversation: both answers and their <|im_end|> trained
    tok = _tokenizer(chatml_tokenizer)
    row = next(i for i, s in enumerate(p.dataset["source"]) if s == "messages-messages-jsonl")
    labels = p.dataset[row]["labels"]
    assert _runs(labels, tok) == ["Yes, 39 C is a high fever.<|im_end|>", "Paracetamol, and plenty of fluids.<|im_end|>"]


def _tokenizer(path: Path, template: Path | None = CHATML):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if template is not None:
        tok.chat_template = template.read_text()
    return tok


def _runs(labels: list[int], tok) -> list[str]:
    runs, cur = [], []
    for x in [*labels, IGNORE]:
        if x != IGNORE:
            cur.append(x)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    return runs


def test_chat_without_any_template_is_one_line_saying_how_to_give_one(files, chatml_tokenizer, tmp_path):
    recipe = config.load(RECIPES / "demo.yaml", [f"model.tokenizer={chatml_tokenizer}",
                                                 f"data.sources=[{{path: {files['messages.jsonl']}, format: messages}}]",
                                                 "data.template=chat", f"data.cache_dir={tmp_path}"])
    with pytest.raises(RecipeError) as err:
        prepare(recipe, log=lambda _: None)
    assert len(err.value.problems) == 1 and "\n" not in str(err.value)
    assert "has no chat template; give one with data.chat_template: path/to/template.jinja" in str(err.value)


# ---- bad rows: one line naming the file and row ----

BAD_ROWS = [
    ("missing-column", "messages", [{"dialog": []}], None,
     "no column 'messages' (columns: dialog)"),
    ("wrong-type", "messages", [{"messages": "hello"}], 1, "'messages' must be a list of turns, not string"),
    ("empty", "messages", [{"messages": []}], 1, "empty conversation in 'messages'"),
    ("no-assistant", "messages", [{"messages": [{"role": "user", "content": "Hi"}]}], 1,
     "no assistant turn with text in 'messages' (nothing to train on)"),
    ("system-late", "messages", [{"messages": [{"role": "user", "content": "Hi"}, {"role": "system", "content": "x"},
                                               {"role": "assistant", "content": "Hello"}]}], 1,
     "turn 2 of 'messages': a system turn may only come first"),
    # hiyouga/LlamaFactory#2529: glaive function-calling turns in a ShareGPT file
    ("function-call-role", "sharegpt", [SHAREGPT[1], {"conversations": [
        {"from": "human", "value": "Area of a 5 by 3 rectangle?"},
        {"from": "function_call", "value": "{\"name\": \"calculate_area\"}"},
        {"from": "observation", "value": "{\"area\": 15}"},
        {"from": "gpt", "value": "15 square units."}]}], 2,
     "turn 2 of 'conversations': unknown from 'function_call' (known: system, human, user, gpt, assistant, chatgpt)"),
    ("completion-type", "prompt_completion", [{"prompt": "Q?", "completion": 3}], 1,
     "'completion' must be a string, not int"),
]


@pytest.mark.parametrize("case,fmt,rows,row,reason", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_a_bad_row_is_one_line_naming_file_and_row(tmp_path, case, fmt, rows, row, reason):
    f = _jsonl(tmp_path / f"{case}.jsonl", rows)
    if row is None:
        with pytest.raises(SourceError) as err:
            list(READERS[fmt].read(str(f)))
        assert str(err.value) == f"{f}: {reason}"
        return
    bad = [x for x in READERS[fmt].read(str(f)) if isinstance(x, Malformed)]
    assert [str(x) for x in bad] == [f"{f}: row {row}: {reason}"]


def test_a_source_with_only_bad_rows_stops_with_the_first_reason(tmp_path):
    f = _jsonl(tmp_path / "chats.jsonl", [{"messages": []}, {"messages": [{"role": "user", "content": "Hi"}]}])
    recipe = config.load(RECIPES / "demo.yaml", [f"data.sources=[{{path: {f}, format: messages}}]"])
    with pytest.raises(RecipeError) as err:
        prepare(recipe, log=lambda _: None)
    assert str(err.value).count("\n") == 0
    assert (f"no usable samples (malformed: 2); first: {f}: row 1: empty conversation in 'messages'; "
            f"{f}: row 2: no assistant turn") in str(err.value)


def test_a_csv_row_is_counted_from_the_first_data_row(tmp_path):
    f = _csv(tmp_path / "pairs.csv", [{"prompt": "Q1?", "completion": "A1."}, {"prompt": "Q2?", "completion": ""}])
    bad = [str(x) for x in READERS["prompt_completion"].read(str(f)) if isinstance(x, Malformed)]
    assert bad == [f"{f}: row 2: empty completion"]


def test_table_files_under_format_jsonl_say_which_format_reads_them(files):
    with pytest.raises(SourceError, match=r"pairs.parquet is not JSON Lines or a JSON list: read it with format: hub"):
        list(READERS["jsonl"].read(str(files["pairs.parquet"])))


def test_a_glob_matching_nothing_and_an_unknown_extension_are_one_line(tmp_path):
    with pytest.raises(SourceError, match=r"nothing-\*\.parquet: the pattern matches no file"):
        list(READERS["messages"].read(str(tmp_path / "nothing-*.parquet")))
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(SourceError, match=r"notes.txt: not a table file medtune reads"):
        list(READERS["messages"].read(str(tmp_path / "notes.txt")))


def test_columns_name_fields_the_format_has(files):
    import dataclasses

    from medtune.data.checks import source_problems

    recipe = config.load(RECIPES / "demo.yaml")
    src = config.SourceConfig(path=str(files["messages.jsonl"]), format="messages", columns={"output": "answer"})
    bad = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, sources=[src]))
    assert source_problems(bad) == [("data.sources.0.columns.output",
                                     "format messages has no field 'output' (fields: messages, task, source)")]
    src = config.SourceConfig(path=str(files["qa.csv"]), format="hub", columns={"instruction": "question"},
                              instruction="Answer.")
    both = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, sources=[src]))
    assert source_problems(both) == [("data.sources.0.instruction",
                                      "give either a fixed instruction or columns.instruction, not both")]


# ---- public reports turned into inputs: every assistant turn and its terminator trained ----

MISTRAL = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
           "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
THINK = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there!"},
         {"role": "user", "content": "How are you?"},
         {"role": "assistant", "content": "<think>I should respond positively</think>I'm doing great, thanks for asking!"}]


def test_axolotl_3088_multi_turn_answers_with_think_are_all_trained(chatml_tokenizer, tmp_path):
    f = _jsonl(tmp_path / "think.jsonl", [{"messages": THINK}])
    [rec] = READERS["messages"].read(str(f))
    tok = _tokenizer(chatml_tokenizer)
    enc = encode(render(rec, "chat", tok), tok, 4096)
    assert _runs(enc.labels, tok) == [
        "Hi there!<|im_end|>", "<think>I should respond positively</think>I'm doing great, thanks for asking!<|im_end|>"]


def test_axolotl_1761_and_2089_sharegpt_through_a_mistral_template_trains_every_answer_and_its_eos(tmp_path):
    f = tmp_path / "sg.json"
    f.write_text(json.dumps([SHAREGPT[2]]))
    [rec] = READERS["sharegpt"].read(str(f))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_tokenizer_dir())
    tok.chat_template = MISTRAL
    enc = encode(render(rec, "chat", tok), tok, 4096)
    assert _runs(enc.labels, tok) == ["A resting heart rate above 100 beats per minute.</s>",
                                      "A resting heart rate below 60 beats per minute.</s>"]
    assert enc.input_ids.count(tok.eos_token_id) == 2 and enc.labels[-1] == tok.eos_token_id


def test_a_table_file_that_is_not_json_or_not_utf8_is_one_line(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": [}\n')
    with pytest.raises(SourceError) as err:
        list(READERS["messages"].read(str(broken)))
    assert str(err.value).startswith(f"{broken}: cannot read it as json with datasets: ") and "\n" not in str(err.value)
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    with pytest.raises(SourceError) as err:  # pyarrow reads it, then fails on the row: checked first
        list(READERS["messages"].read(str(latin1)))
    at = latin1.read_bytes().index(b"\xe9")
    assert at == 46
    assert str(err.value) == (f"{latin1}:1: not UTF-8 text (byte 0xe9 at byte offset {at}: invalid continuation "
                              "byte); save the file as UTF-8")


def test_a_relative_table_file_not_written_yet_is_a_path_beside_the_recipe_not_a_hub_id(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: {RECIPES / 'demo.yaml'}\n"
                      "data:\n  sources: [{path: data/chats.parquet, format: messages}, "
                      "{path: \"shards/*.jsonl\", format: messages}]\n")
    with pytest.raises(RecipeError) as err:
        config.load(recipe)
    assert err.value.problems == [f"{recipe}: data.sources.0.path: {tmp_path}/data/chats.parquet does not exist",
                                  f"{recipe}: data.sources.1.path: {tmp_path}/shards/*.jsonl: the pattern matches no file"]
