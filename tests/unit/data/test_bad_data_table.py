"""Bad data rows, one per table row, through ``medtune prepare``: one line, exit 2, the cache untouched.

Each row writes a copy of a fixture corpus (``tests/assets/corpora``) with one
kind of bad input and prepares a data recipe reading it. What must hold for
every row: ``medtune prepare`` exits 2 (`medtune.base.exitcodes.USAGE`) printing
exactly one line, ``medtune: error: ...``, that names the file and line
(``FILE:LINE: reason``) and the reason; and the data cache, which already
holds a good build, is byte for byte as it was (no file added, changed or
removed, lock files included).

A bad row inside good data stops the run under ``data.strict: true``; a
source whose every row is bad stops it always (``no usable samples``, with
the first reasons); a file that is not UTF-8 stops it always, at its first
bad byte.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
import yaml

from medtune import cli
from medtune.base import exitcodes
from tests.conftest import REPO

CORPORA = REPO / "tests" / "assets" / "corpora"


def insert(after: int, line: str) -> Callable[[bytes], tuple[bytes, int]]:
    """Insert `line` after line `after` of the file; it becomes line ``after + 1``."""
    def mutate(data: bytes) -> tuple[bytes, int]:
        rows = data.decode().split("\n")
        rows[after:after] = [line]
        return "\n".join(rows).encode(), after + 1
    return mutate


def every_line(make: Callable[[int], str], n: int = 3) -> Callable[[bytes], tuple[bytes, int]]:
    """The whole file replaced by `n` lines ``make(1) .. make(n)``; the first problem is line 1."""
    def mutate(data: bytes) -> tuple[bytes, int]:
        return "".join(make(i) + "\n" for i in range(1, n + 1)).encode(), 1
    return mutate


def latin1_at(line: int) -> Callable[[bytes], tuple[bytes, int]]:
    """The first 'e' of `line` saved as Latin-1 'é' (byte 0xe9): the file is no longer UTF-8."""
    def mutate(data: bytes) -> tuple[bytes, int]:
        start = sum(len(row) + 1 for row in data.split(b"\n")[:line - 1])
        at = data.index(b"e", start)
        assert data.count(b"\n", 0, at) == line - 1, "line {line} has no 'e'"
        return data[:at] + b"\xe9" + data[at + 1:], line
    return mutate


def utf16(data: bytes) -> tuple[bytes, int]:
    """Saved as Windows' "Unicode" (UTF-16 LE with its BOM): byte 0 is 0xff."""
    return data.decode().encode("utf-16"), 1


def pubmedqa_item_first(item: dict) -> Callable[[bytes], tuple[bytes, int]]:
    def mutate(data: bytes) -> tuple[bytes, int]:
        out = json.dumps({"99999999": item, **json.loads(data)}, indent=1)
        return out.encode(), out[:out.index('"99999999"')].count("\n") + 1
    return mutate


def truncate(n: int) -> Callable[[bytes], tuple[bytes, int]]:
    """The first `n` bytes only; the problem is on the last line kept."""
    def mutate(data: bytes) -> tuple[bytes, int]:
        return data[:n], data[:n].count(b"\n") + 1
    return mutate


QA = {"QUESTION": "Q?", "CONTEXTS": ["C."], "final_decision": "yes"}
UTF8 = "not UTF-8 text (byte 0xe9 at byte offset"

# (case, format, file under tests/assets/corpora, source options, strict, mutate, the reason in the line)
ROWS = [
    ("jsonl: every output an integer", "jsonl", "pmc_llama/train.jsonl", {}, False,
     every_line(lambda i: json.dumps({"instruction": "Explain.", "input": "", "output": i})),
     "no usable samples (malformed: 3); first: {file}:1: 'output' must be a string, not int; "
     "{file}:2: 'output' must be a string, not int; {file}:3: 'output' must be a string, not int"),
    ("jsonl: chat messages only", "jsonl", "pmc_llama/train.jsonl", {}, False,
     every_line(lambda i: json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]})),
     "no usable samples (malformed: 3); first: {file}:1: missing string field 'instruction' (keys: messages)"),
    ("jsonl: truncated JSON line", "jsonl", "pmc_llama/train.jsonl", {}, True,
     insert(1, '{"instruction": "Explain.", "input": "x", "output": "y"'),
     "{file}:2: bad JSON: Expecting ',' delimiter"),
    ("jsonl: Latin-1 text", "jsonl", "pmc_llama/train.jsonl", {}, False, latin1_at(2), "{file}:2: " + UTF8),
    # a lone surrogate is a legal JSON escape but not text: every tokenizer failed on it with a
    # traceback (UnicodeEncodeError: surrogates not allowed; transformers#8886, tiktoken#82)
    ("jsonl: lone surrogate", "jsonl", "pmc_llama/train.jsonl", {}, True,
     insert(1, '{"instruction": "Explain.", "input": "scraped \\ud83d text", "output": "y"}'),
     "{file}:2: 'input' holds a lone UTF-16 surrogate (U+D83D at character 8)"),
    ("json list: null output", "jsonl", "chatdoctor/HealthCareMagic-100k.json", {}, True,
     insert(1, '  {"instruction": "Answer.", "input": "q", "output": null},'),
     "{file}:2: item 1: 'output' must be a string, not null"),
    ("conll: bad tag", "conll", "ncbi_disease/train.tsv", {}, True,
     insert(9, "gout\tB_Disease"), "{file}:10: bad tag 'B_Disease' (expected O, B, I, B-TYPE or I-TYPE)"),
    ("conll: token with no tag", "conll", "bc2gm/train.tsv", {}, True,
     insert(0, "BRCA1"), "{file}:1: token line with no tag: 'BRCA1'"),
    ("conll: Latin-1 text", "conll", "ncbi_disease/train.tsv", {}, False, latin1_at(2), "{file}:2: " + UTF8),
    ("mednli: unknown gold label", "mednli", "mednli/mli_train_v1.jsonl", {}, True,
     insert(2, '{"sentence1": "a.", "sentence2": "b.", "gold_label": "-"}'),
     "{file}:3: unknown gold_label '-' (expected entailment, contradiction or neutral)"),
    ("mednli: a CSV file", "mednli", "mednli/mli_train_v1.jsonl", {}, False,
     every_line(lambda i: f"a.,b.,neutral,{i}"),
     "no usable samples (malformed: 3); first: {file}:1: bad JSON: Expecting value"),
    ("i2b2-2010-re: unknown relation", "i2b2-2010-re", "i2b2_2010_re/train.tsv", {}, True,
     insert(3, "r0\t@treatment$ for @problem$ .\tTrXP"), "{file}:4: unknown label 'TrXP'"),
    ("gad: wrong column count", "gad", "gad/train.tsv", {}, True,
     insert(2, "@GENE$ and @DISEASE$ with no label"), "{file}:3: 1 tab-separated columns"),
    ("gad: saved as UTF-16", "gad", "gad/train.tsv", {}, False, utf16,
     "{file}:1: not UTF-8 text (byte 0xff at byte offset 0: invalid start byte)"),
    ("hoc: no header row", "hoc", "hoc/dev.tsv", {"split": "dev"}, False,
     every_line(lambda i: f"Cells grew {i} .\tCE"),
     "no usable samples (malformed: 1); first: {file}:1: no header row naming a text column"),
    ("hoc: unknown hallmark", "hoc", "hoc/dev.tsv", {"split": "dev"}, True,
     insert(2, "Glycolysis rose .\tMetabolism"), "{file}:3: unknown hallmark 'Metabolism'"),
    ("pubmedqa: unknown answer", "pubmedqa", "pubmedqa/ori_pqal.json", {"split": "all"}, True,
     pubmedqa_item_first({**QA, "final_decision": "perhaps"}),
     "{file}:2: item 99999999: unknown final_decision 'perhaps' (expected yes, no or maybe)"),
    ("pubmedqa: truncated file", "pubmedqa", "pubmedqa/ori_pqal.json", {"split": "all"}, False,
     truncate(300), "no usable samples (malformed: 1); first: {file}:2: bad JSON: Unterminated string"),
]


def test_the_table_covers_every_local_reader_and_both_ways_to_stop():
    assert len(ROWS) >= 12
    assert {r[1] for r in ROWS} == {"jsonl", "conll", "mednli", "i2b2-2010-re", "gad", "hoc", "pubmedqa"}
    assert {r[4] for r in ROWS} == {True, False}


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with a hash of its bytes (directories as 'dir')."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A data cache that already holds a good build (and the tokenizer trained for it)."""
    root = tmp_path_factory.mktemp("cache")
    recipe = root.parent / "good.yaml"
    recipe.write_text(yaml.safe_dump({"data": {
        "sources": [{"path": str(CORPORA / "mednli"), "format": "mednli"}], "cache_dir": str(root)}}))
    assert cli.main(["prepare", str(recipe)]) == 0
    assert (root / "data").is_dir() and (root / "tokenizers").is_dir()
    return root


@pytest.mark.parametrize("case,fmt,fixture,options,strict,mutate,reason", ROWS, ids=[r[0] for r in ROWS])
def test_a_bad_row_is_one_line_exit_2_and_the_cache_is_untouched(
        tmp_path, capsys, cache, case, fmt, fixture, options, strict, mutate, reason):
    folder, name = fixture.split("/")
    shutil.copytree(CORPORA / folder, tmp_path / folder)
    bad = tmp_path / folder / name
    data, line = mutate(bad.read_bytes())
    bad.write_bytes(data)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": {
        "sources": [{"path": str(bad), "format": fmt, "name": "src", **options}],
        "strict": strict, "cache_dir": str(cache)}}))
    before = _snapshot(cache)
    capsys.readouterr()

    code = cli.main(["prepare", str(recipe)])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == exitcodes.USAGE == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"medtune: error: {recipe}: ")
    assert f"{bad}:{line}: " in err[0]  # the file and the line
    assert reason.format(file=bad) in err[0]
    assert _snapshot(cache) == before
