"""Every reader on the synthetic fixtures: what it yields, and parse(format(x)) == gold."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtune.data import tasks
from medtune.data.formats import READERS, Malformed, Record, SourceError, source_files
from tests.conftest import REPO

CORPORA = REPO / "tests" / "assets" / "corpora"


def _read(fmt: str, path: Path | str, **options) -> list[Record]:
    items = list(READERS[fmt].read(str(path), **options))
    assert not [x for x in items if isinstance(x, Malformed)], items
    return items


# (format, path under tests/assets/corpora, options, records, task)
FIXTURES = [
    ("conll", "ncbi_disease", {}, 4, "ner"),
    ("conll", "bc5cdr_disease", {}, 3, "ner"),
    ("conll", "bc5cdr_chem", {}, 3, "ner"),
    ("conll", "bc2gm", {}, 3, "ner"),
    ("conll", "jnlpba", {}, 4, "ner"),
    ("conll", "jnlpba", {"tags": "typed"}, 4, "ner-typed"),
    ("conll", "i2b2_2012", {"tags": "typed"}, 4, "ner-typed"),
    ("i2b2-2010-re", "i2b2_2010_re", {}, 9, "re-i2b2"),
    ("gad", "gad", {}, 4, "re-gad"),
    ("gad", "gad", {"split": "test"}, 2, "re-gad"),
    ("hoc", "hoc", {}, 4, "hoc"),
    ("hoc", "hoc", {"split": "dev"}, 3, "hoc"),
    ("mednli", "mednli", {}, 5, "nli"),
    ("pubmedqa", "pubmedqa", {}, 2, "pubmedqa"),
    ("pubmedqa", "pubmedqa", {"split": "test"}, 2, "pubmedqa"),
    ("pubmedqa", "pubmedqa", {"split": "all"}, 4, "pubmedqa"),
]


@pytest.mark.parametrize("fmt,folder,options,count,task", FIXTURES,
                         ids=[f"{f[1]}-{'-'.join(map(str, f[2].values())) or 'train'}" for f in FIXTURES])
def test_fixture_round_trips(fmt, folder, options, count, task):
    records = _read(fmt, CORPORA / folder, **options)
    assert len(records) == count
    for r in records:
        assert r.task == task and r.instruction == "" and r.gold is not None
        assert tasks.parse(r.task, r.output, r.input) == r.gold


def test_conll_skips_docstart_and_collapses_jnlpba_types():
    untyped = _read("conll", CORPORA / "jnlpba")
    assert not any("DOCSTART" in r.input for r in untyped)
    assert untyped[0].input == "IL-2 gene expression requires NF-kappa B in T cells ."
    assert untyped[0].gold == ("B", "I", "O", "O", "B", "I", "O", "B", "I", "O")
    assert untyped[0].output.splitlines()[:2] == ["IL-2 : B", "gene : I"]
    typed = _read("conll", CORPORA / "jnlpba", tags="typed")
    assert typed[1].gold[1:3] == ("B-DNA", "I-DNA") and "Jurkat : B-CELL_LINE" in typed[1].output


def test_conll_trailing_tab_is_not_an_empty_tag_column(tmp_path):
    """`token<TAB>tag<TAB>` (an export's trailing delimiter, CRLF or not) has the tag before it;
    the sentence was skipped as 'token line with no tag' (flair#1861, CoreNLP#918)."""
    f = tmp_path / "train.tsv"
    f.write_bytes(b"Aspirin\tB-Chemical\t\ncauses\tO\t \nulcers\tB-Disease\t\r\n\n"
                  b"Fever\tB\nonly\t\n")
    items = list(READERS["conll"].read(str(f)))
    assert items[0] == Record("", "Aspirin causes ulcers", "Aspirin : B\ncauses : O\nulcers : B", "ner",
                              ("B", "O", "B"))
    assert items[1] == Malformed(str(f), 6, "token line with no tag: 'only'")  # a tab, then nothing


def test_i2b2_2012_keeps_types_and_reads_space_separated_files():
    r = _read("conll", CORPORA / "i2b2_2012", tags="typed")[0]
    assert "chest : B-PROBLEM\npain : I-PROBLEM" in r.output
    assert "cardiology : B-CLINICAL_DEPT" in r.output and tasks.mentions(r.gold) == 3


def test_relation_labels_and_markers():
    i2b2 = _read("i2b2-2010-re", CORPORA / "i2b2_2010_re")
    assert [r.output for r in i2b2] == ["TrAP", "TeRP", "TrIP", "TrWP", "TrNAP", "TrCP", "TeCP", "PIP",
                                        "No Relations"]
    assert i2b2[-1].input == 'She reported "mild" @problem$ before the @test$ .'  # CSV quoting undone
    gad = _read("gad", CORPORA / "gad")
    assert [r.output for r in gad] == ["Positive", "Negative", "Positive", "Negative"]
    assert "@GENE$" in gad[0].input and "@DISEASE$" in gad[0].input


def test_hoc_label_encodings():
    bits = _read("hoc", CORPORA / "hoc")
    assert bits[0].output == "Inducing angiogenesis (A), Sustaining proliferative signaling (PS)"
    assert bits[1].output == "Activating invasion and metastasis (IM)" and bits[2].output == "None"
    assert bits[3].gold == ("Enabling replicative immortality (RI)",
                            "Genomic instability and mutation (GI)", "Resisting cell death (CD)")
    names = _read("hoc", CORPORA / "hoc", split="dev")
    assert names[0].output == "Avoiding immune destruction (ID), Tumor promoting inflammation (TPI)"
    assert names[1].gold == ("Cellular energetics (CE)",) and names[2].gold == ()


def test_mednli_input_format():
    r = _read("mednli", CORPORA / "mednli")[1]
    assert r.input == ("Sentence 1: The patient was intubated for airway protection.\n"
                       "Sentence 2: The patient breathed without support throughout.")
    assert r.output == "Contradiction"


def test_pubmedqa_splits_follow_the_test_ids():
    train = _read("pubmedqa", CORPORA / "pubmedqa")
    test = _read("pubmedqa", CORPORA / "pubmedqa" / "ori_pqal.json", split="test")
    assert [r.output for r in train] == ["yes", "no"] and [r.output for r in test] == ["maybe", "yes"]
    assert train[0].input.startswith("Context: We randomised 200 adults") and \
        train[0].input.endswith("\nQuestion: Does daily walking reduce fatigue in adults after chemotherapy?")


def test_generic_json_list_and_lines():
    chat = _read("jsonl", CORPORA / "chatdoctor" / "HealthCareMagic-100k.json")
    assert len(chat) == 2 and chat[0].instruction.startswith("If you are a doctor")
    pmc = _read("jsonl", CORPORA / "pmc_llama")  # a directory: its train.jsonl
    assert [r.source for r in pmc] == ["medical_terms", "study_design", "pharmacology"]
    assert {r.task for r in pmc} == {"open-qa"} and all(r.gold is None for r in pmc)


def test_files_name_what_a_source_reads():
    assert source_files("conll", str(CORPORA / "gad"), "test") == [CORPORA / "gad" / "test.tsv"]
    assert [p.name for p in source_files("pubmedqa", str(CORPORA / "pubmedqa"), "train")] == \
        ["ori_pqal.json", "test_ground_truth.json"]
    with pytest.raises(SourceError, match="no file for split 'devel'"):
        source_files("conll", str(CORPORA / "bc2gm"), "devel")
    with pytest.raises(SourceError, match="not one of train, test, all"):
        source_files("pubmedqa", str(CORPORA / "pubmedqa"), "dev")


ROWS = {
    "instruction": ["Classify.", "Answer.", "Classify."],
    "input": ["a", "b", "c"],
    "output": ["Positive", "free text", ""],
    "source": ["GAD", "ChatDoctor", "GAD"],
}


def test_hub_reader_reads_a_saved_dataset_and_a_data_dir(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(ROWS)
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "validation": ds.select([0])}).save_to_disk(str(tmp_path / "dict"))
    (tmp_path / "files").mkdir()
    ds.to_json(str(tmp_path / "files" / "train.jsonl"))
    for where, split in (("saved", "train"), ("dict", "train"), ("files", "train")):
        items = list(READERS["hub"].read(str(tmp_path / where), split=split))
        good = [x for x in items if isinstance(x, Record)]
        bad = [x for x in items if isinstance(x, Malformed)]
        assert [r.source for r in good] == ["GAD", "ChatDoctor"], where
        assert len(bad) == 1 and bad[0].line == 3 and "empty output" in bad[0].reason, where
    assert len(list(READERS["hub"].read(str(tmp_path / "dict"), split="validation"))) == 1
    with pytest.raises(SourceError, match="no split 'test'"):
        list(READERS["hub"].read(str(tmp_path / "dict"), split="test"))


def test_hub_reader_names_a_missing_column(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"prompt": ["x"], "output": ["y"]}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(SourceError, match="no column 'instruction'"):
        list(READERS["hub"].read(str(tmp_path / "d")))


def test_generic_reader_keeps_the_existing_json_list_behaviour(tmp_path):
    f = tmp_path / "list.json"
    f.write_text(json.dumps([{"instruction": "i", "output": "o", "task": "qa"}, {"output": "o"}]))
    items = list(READERS["jsonl"].read(str(f)))
    assert isinstance(items[0], Record) and items[0].task == "qa"
    # a one-line list: the line is the file's line, the item its number in the list
    assert items[1] == Malformed(str(f), 1, "item 2: missing string field 'instruction' (keys: output)")


def test_a_json_list_item_is_located_at_the_line_where_it_starts(tmp_path):
    f = tmp_path / "list.json"
    f.write_text(json.dumps([{"instruction": "i", "output": "o"}, {"instruction": "i", "output": 3},
                             {"instruction": "j", "output": "p"}], indent=2))
    items = list(READERS["jsonl"].read(str(f)))
    assert [type(x).__name__ for x in items] == ["Record", "Malformed", "Record"]
    assert str(items[1]) == f"{f}:6: item 2: 'output' must be a string, not int"


# ---- Text encodings: every reader reads UTF-8 with a BOM, CRLF and U+2028/U+2029/U+0085 alike ----

ODD = "\u2028\u2029\u0085"  # line and paragraph separators and NEL: legal, unescaped, inside JSON strings


def _json_lines(key: str):
    def mutate(text: str) -> str:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        for row in rows:
            row[key] = row[key].replace(" ", f" {ODD}", 1)
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return mutate


def _turns(key: str, content: str, as_list: bool = False):
    """Every turn's `content` gets the characters after its first space (JSON Lines, or a JSON list)."""
    def mutate(text: str) -> str:
        rows = json.loads(text) if as_list else [json.loads(line) for line in text.splitlines() if line.strip()]
        for row in rows:
            for turn in row[key]:
                turn[content] = turn[content].replace(" ", f" {ODD}", 1)
        if as_list:
            return json.dumps(rows, ensure_ascii=False, indent=1)
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return mutate


def _text(r: Record) -> str:
    """Where a record keeps its text: its input, or a prompt/completion's prompt, or every turn."""
    return r.input + r.instruction + "".join(c for _, c in r.messages or ())


def _json_list(text: str) -> str:
    rows = json.loads(text)
    for row in rows:
        row["input"] = row["input"].replace(" ", f" {ODD}", 1)
    return json.dumps(rows, ensure_ascii=False, indent=1)


def _pubmedqa(text: str) -> str:
    items = json.loads(text)
    for item in items.values():
        item["QUESTION"] = item["QUESTION"].replace(" ", f" {ODD}", 1)
    return json.dumps(items, ensure_ascii=False, indent=1)


def _tsv(text: str) -> str:
    """The longest field of each row (its text) gets the characters after its first space."""
    out = []
    for line in text.splitlines():
        fields = line.split("\t")
        i = max(range(len(fields)), key=lambda j: len(fields[j]))
        fields[i] = fields[i].replace(" ", f" {ODD}", 1)
        out.append("\t".join(fields))
    return "\n".join(out) + "\n"


def _conll(text: str) -> str:
    """Each token gets the characters inside it (tab or space separated)."""
    out = []
    for line in text.splitlines():
        sep = "\t" if "\t" in line else " "
        if line.strip() and not line.startswith("-DOCSTART-"):
            tok, rest = line.split(sep, 1)
            line = f"{tok[:1]}{ODD}{tok[1:]}{sep}{rest}"
        out.append(line)
    return "\n".join(out) + "\n"


# (id, format, source path under the corpora, the files a source reads (BOM'd and rewritten), options, records, mutate)
ENCODED = [
    ("jsonl-lines", "jsonl", "pmc_llama", ["train.jsonl"], {}, 3, _json_lines("input")),
    ("jsonl-list", "jsonl", "chatdoctor/HealthCareMagic-100k.json", ["HealthCareMagic-100k.json"], {}, 2, _json_list),
    ("hub-data-dir", "hub", "pmc_llama", ["train.jsonl"], {}, 3, _json_lines("input")),
    ("messages", "messages", "messages/train.jsonl", ["train.jsonl"], {}, 3, _turns("messages", "content")),
    ("sharegpt", "sharegpt", "sharegpt/train.json", ["train.json"], {}, 2,
     _turns("conversations", "value", as_list=True)),
    ("prompt-completion", "prompt_completion", "prompt_completion/train.jsonl", ["train.jsonl"], {}, 3,
     _json_lines("prompt")),
    ("conll-tab", "conll", "ncbi_disease", ["train.tsv"], {}, 4, _conll),
    ("conll-space-typed", "conll", "i2b2_2012", ["train.tsv"], {"tags": "typed"}, 4, _conll),
    ("conll-docstart", "conll", "jnlpba", ["train.tsv"], {}, 4, _conll),
    ("pubmedqa", "pubmedqa", "pubmedqa", ["ori_pqal.json", "test_ground_truth.json"], {}, 2, _pubmedqa),
    ("mednli", "mednli", "mednli", ["mli_train_v1.jsonl"], {}, 5, _json_lines("sentence1")),
    ("i2b2-2010-re", "i2b2-2010-re", "i2b2_2010_re", ["train.tsv"], {}, 9, _tsv),
    ("gad-no-header", "gad", "gad", ["train.tsv"], {}, 4, _tsv),
    ("gad-header", "gad", "gad", ["test.tsv"], {"split": "test"}, 2, _tsv),
    ("hoc-bits", "hoc", "hoc", ["train.tsv"], {}, 4, _tsv),
    ("hoc-names", "hoc", "hoc", ["dev.tsv"], {"split": "dev"}, 3, _tsv),
]
_IDS = [c[0] for c in ENCODED]


TABLES = ("hub", "messages", "sharegpt", "prompt_completion")  # read by datasets' builders


def test_the_encoding_table_covers_every_reader():
    assert {c[1] for c in ENCODED} == set(READERS)


def _copy_as(tmp_path: Path, name: str, source: str, rewrite) -> Path:
    """The source path in a copy of its fixture folder, each file passed through
    ``rewrite(file name, bytes)``."""
    folder = source.split("/")[0]
    out = tmp_path / name / folder
    out.mkdir(parents=True)
    for f in (CORPORA / folder).iterdir():
        (out / f.name).write_bytes(rewrite(f.name, f.read_bytes()))
    return tmp_path / name / source


def _items(fmt: str, where: Path, options: dict) -> list:
    """What a reader yields, with file paths left out (the copies live in different folders)."""
    return [x if isinstance(x, Record) else (x.line, x.reason)
            for x in READERS[fmt].read(str(where), **options)]


@pytest.mark.parametrize("case,fmt,folder,names,options,count,mutate", ENCODED, ids=_IDS)
def test_a_byte_order_mark_changes_nothing(tmp_path, case, fmt, folder, names, options, count, mutate):
    plain = _copy_as(tmp_path, "plain", folder, lambda n, b: b)
    bom = _copy_as(tmp_path, "bom", folder, lambda n, b: b"\xef\xbb\xbf" + b if n in names else b)
    want = _items(fmt, plain, options)
    assert len(want) == count and all(isinstance(x, Record) for x in want)
    assert _items(fmt, bom, options) == want


@pytest.mark.parametrize("case,fmt,folder,names,options,count,mutate", ENCODED, ids=_IDS)
def test_crlf_reads_as_lf(tmp_path, case, fmt, folder, names, options, count, mutate):
    lf = _copy_as(tmp_path, "lf", folder, lambda n, b: b)
    crlf = _copy_as(tmp_path, "crlf", folder, lambda n, b: b.replace(b"\n", b"\r\n") if n in names else b)
    assert _items(fmt, crlf, options) == _items(fmt, lf, options)
    assert len(_items(fmt, crlf, options)) == count


@pytest.mark.parametrize("case,fmt,folder,names,options,count,mutate", ENCODED, ids=_IDS)
def test_line_separator_characters_stay_inside_their_record(tmp_path, case, fmt, folder, names, options,
                                                            count, mutate):
    main = names[0]
    odd = _copy_as(tmp_path, "odd", folder,
                   lambda n, b: mutate(b.decode()).encode() if n == main else b)
    assert ODD in (odd.parent if odd.is_file() else odd).joinpath(main).read_text(encoding="utf-8")
    items = _items(fmt, odd, options)
    assert [type(x).__name__ for x in items] == ["Record"] * count, items[:3]
    assert all(ODD in _text(r) for r in items)


@pytest.mark.parametrize("case,fmt,folder,names,options,count,mutate",
                         [c for c in ENCODED if c[1] not in TABLES], ids=[c[0] for c in ENCODED if c[1] not in TABLES])
def test_a_file_that_is_not_utf8_is_one_line_naming_file_line_and_byte_offset(
        tmp_path, case, fmt, folder, names, options, count, mutate):
    main = names[0]
    data = (CORPORA / folder.split("/")[0] / main).read_bytes()
    at = data.index(b"e", len(data) // 2)  # an 'e' saved as Latin-1 'é' half-way into the file
    bad = _copy_as(tmp_path, "latin1", folder,
                   lambda n, b: b[:at] + b"\xe9" + b[at + 1:] if n == main else b)
    with pytest.raises(SourceError) as err:
        list(READERS[fmt].read(str(bad), **options))
    line = data.count(b"\n", 0, at) + 1
    assert str(err.value) == (f"{bad.parent if bad.is_file() else bad}/{main}:{line}: not UTF-8 text (byte 0xe9 at byte offset {at}: "
                              "invalid continuation byte); save the file as UTF-8")
