"""Tab-separated corpora in their BLUE/BioBERT forms: i2b2-2010 RE, GAD and HoC.

Rows are read line by line (so line numbers are exact) and a field written
with CSV quoting (``"say ""no"" now"``) is unquoted. A header row names the columns;
without one, 2 columns are ``sentence, label`` and 3 are ``index, sentence, label``.

- ``i2b2-2010-re`` (BLUE ``i2b2-2010/{train,dev,test}.tsv``): entities are
  replaced by ``@problem$``, ``@test$``, ``@treatment$``; the label is one of
  PIP, TeCP, TeRP, TrAP, TrCP, TrIP, TrNAP, TrWP, or ``false`` (written
  ``No Relations``).
- ``gad`` (BioBERT ``GAD/<fold>/{train,test}.tsv``): ``@GENE$`` and
  ``@DISEASE$``; the label ``1``/``0`` is written ``Positive``/``Negative``.
- ``hoc`` (BLUE ``hoc/{train,dev,test}.tsv``, with a header): the label
  column holds BLUE's ``0_0,1_1,...`` encoding (index i = i-th hallmark in
  alphabetical order) or comma-separated hallmark names or abbreviations;
  empty or ``None`` means no hallmark. Written as the comma-separated full
  names (``Sustaining proliferative signaling (PS), ...``) or ``None``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from medtune.data import tasks
from medtune.data.formats.files import split_file, text_lines
from medtune.data.formats.records import Malformed, Record

NAMES = ("{split}.tsv", "{split}.txt")
TEXT_COLUMNS = ("sentence", "text", "sentence1", "document", "abstract")
LABEL_COLUMNS = ("label", "labels")
_I2B2_MARK = re.compile(r"@(problem|test|treatment)\$", re.IGNORECASE)
_BLUE_BITS = re.compile(r"^\d+_[01]$")


def files(path: str, split: str = "train") -> list[Path]:
    return [split_file(path, split, NAMES)]


def read_i2b2_2010(path: str, split: str = "train") -> Iterator[Record | Malformed]:
    return _read(path, split, _i2b2_label, require_header=False)


def read_gad(path: str, split: str = "train") -> Iterator[Record | Malformed]:
    return _read(path, split, _gad_label, require_header=False)


def read_hoc(path: str, split: str = "train") -> Iterator[Record | Malformed]:
    return _read(path, split, _hoc_labels, require_header=True)


def _i2b2_label(text: str, label: str) -> Record | str:
    if len(_I2B2_MARK.findall(text)) < 2:
        return "fewer than two entity markers (@problem$, @test$, @treatment$)"
    lab = tasks.canonical_label(label, tasks.I2B2_2010_LABELS)
    if lab is None:
        return f"unknown label {label!r} (expected one of {', '.join(tasks.I2B2_2010_LABELS[:-1])} or false)"
    return Record("", text, lab, "re-i2b2", lab)


def _gad_label(text: str, label: str) -> Record | str:
    if "@GENE$" not in text or "@DISEASE$" not in text:
        return "missing @GENE$ or @DISEASE$ marker"
    lab = {"1": "Positive", "0": "Negative"}.get(label.strip()) or \
        tasks.canonical_label(label, tasks.GAD_LABELS)
    if lab is None:
        return f"unknown label {label!r} (expected 1, 0, Positive or Negative)"
    return Record("", text, lab, "re-gad", lab)


def _hoc_labels(text: str, label: str) -> Record | str:
    parts = [p.strip() for p in label.split(",") if p.strip()]
    if not parts or [p.lower() for p in parts] in (["none"], ["[]"]):
        found: set[str] = set()
    elif all(_BLUE_BITS.match(p) for p in parts):
        idx = [int(p.split("_")[0]) for p in parts if p.endswith("_1")]
        if any(i >= len(tasks.HOC_LABELS) for i in idx):
            return f"label index out of range in {label!r} (0..{len(tasks.HOC_LABELS) - 1})"
        found = {tasks.HOC_LABELS[i] for i in idx}
    else:
        found = set()
        for p in parts:
            lab = tasks.hoc_label(p)
            if lab is None:
                return f"unknown hallmark {p!r}"
            found.add(lab)
    gold = tuple(lab for lab in tasks.HOC_LABELS if lab in found)
    return Record("", text, tasks.format_hoc(gold), "hoc", gold)


def _unquote(field: str) -> str:
    field = field.strip()
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1].replace('""', '"')
    return field


def _read(path: str, split: str, make, require_header: bool) -> Iterator[Record | Malformed]:
    f = files(path, split)[0]
    columns: tuple[int, int] | None = None
    for lineno, line in text_lines(f):
        if not line.strip():
            continue
        fields = [_unquote(x) for x in line.split("\t")]
        if columns is None:
            low = [x.lower() for x in fields]
            text_col = next((low.index(c) for c in TEXT_COLUMNS if c in low), None)
            label_col = next((low.index(c) for c in LABEL_COLUMNS if c in low), None)
            if text_col is not None and label_col is not None:
                columns = (text_col, label_col)
                continue
            if require_header:
                yield Malformed(str(f), lineno, "no header row naming a text column "
                                f"({', '.join(TEXT_COLUMNS)}) and a label column (label, labels)")
                return
            columns = (-1, -1)  # headerless: decided per row by its width
        if columns == (-1, -1):
            if len(fields) not in (2, 3):
                yield Malformed(str(f), lineno, f"{len(fields)} tab-separated columns "
                                "(expected sentence<TAB>label or index<TAB>sentence<TAB>label)")
                continue
            text, label = fields[-2], fields[-1]
        else:
            if len(fields) <= max(columns):
                yield Malformed(str(f), lineno, f"{len(fields)} columns, the header names "
                                f"{max(columns) + 1} or more")
                continue
            text, label = fields[columns[0]], fields[columns[1]]
        if not text:
            yield Malformed(str(f), lineno, "empty text")
            continue
        out = make(text, label)
        yield out if isinstance(out, Record) else Malformed(str(f), lineno, out)
