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
    assert isinstance(items[1], Malformed) and items[1].line == 2
