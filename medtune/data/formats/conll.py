"""CoNLL/IOB token-per-line NER files (NCBI-disease, BC5CDR, BC2GM, JNLPBA, i2b2-2012).

One ``token<TAB>tag`` (or space-separated; the tag is the last column) per
line, a blank line between sentences, ``-DOCSTART-`` lines skipped::

    Identification	O                 input:  "Identification of APC2 ..."
    of	O                             output: "Identification : O\\nof : O\\n..."
    adenomatous	B-Disease                     "adenomatous : B\\npolyposis : I ..."
    polyposis	I-Disease

``tags: untyped`` (the paper's five biomedical sets) writes ``B``/``I``/``O``,
collapsing any types (JNLPBA's protein, DNA, RNA, cell_type and cell_line
become one class); ``tags: typed`` (i2b2-2012) keeps them, upper-cased
(``B-PROBLEM``). A sentence with a bad line (no tag, a tag outside the
scheme) is skipped whole and reported at that line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from medtune.data import tasks
from medtune.data.formats.files import split_file, text_lines
from medtune.data.formats.records import Malformed, Record

_BLANK = " \t\r\n"  # ASCII blanks; a token may hold any other character
NAMES = ("{split}.tsv", "{split}.txt", "{split}.conll", "{split}.iob", "{split}.iob2", "{split}.bio")


def files(path: str, split: str = "train") -> list[Path]:
    return [split_file(path, split, NAMES)]


def read(path: str, split: str = "train", tags: str = "untyped") -> Iterator[Record | Malformed]:
    f = files(path, split)[0]
    is_typed = tags == "typed"
    task = "ner-typed" if is_typed else "ner"
    normal = tasks.typed if is_typed else tasks.untyped
    want = "O, B-TYPE or I-TYPE" if is_typed else "O, B, I, B-TYPE or I-TYPE"
    seen_tags: dict[str, str | None] = {}  # raw tag -> written tag (None: not in the scheme)
    toks: list[str] = []
    labs: list[str] = []
    problem: tuple[int, str] | None = None

    def flush():
        nonlocal problem
        out = None
        if problem is not None:
            out = Malformed(str(f), *problem)
        elif toks:
            gold = tuple(labs)
            out = Record("", " ".join(toks), tasks.format_ner(toks, gold), task, gold)
        toks.clear()
        labs.clear()
        problem = None
        return out

    for lineno, line in text_lines(f):
        if not line.strip(_BLANK) or line.startswith("-DOCSTART-"):
            item = flush()
            if item is not None:
                yield item
            continue
        if problem is not None:
            continue
        # Columns are split at ASCII tabs or spaces only: U+0085, U+2028 or a
        # no-break space inside a token is part of the token, not a column break.
        # Trailing blanks end the line, not an empty last column (`Aspirin<TAB>B<TAB>`, as some
        # exports write it, has the tag B; flair#1861, CoreNLP#918 met such files).
        line = line.rstrip(_BLANK)
        parts = line.split("\t") if "\t" in line else [x for x in line.split(" ") if x]
        raw_tag = parts[-1].strip(_BLANK)
        if len(parts) < 2 or not raw_tag:
            problem = (lineno, f"token line with no tag: {line.strip(_BLANK)!r}")
            continue
        tok = parts[0].strip(_BLANK)
        if raw_tag not in seen_tags:
            tag = normal(raw_tag)
            seen_tags[raw_tag] = tag if tasks.valid_tag(tag, is_typed) else None
        tag = seen_tags[raw_tag]
        if not tok or " " in tok:
            problem = (lineno, f"bad token {tok!r} (empty or containing a space)")
        elif tag is None:
            problem = (lineno, f"bad tag {raw_tag!r} (expected {want})")
        else:
            toks.append(tok)
            labs.append(tag)
    item = flush()
    if item is not None:
        yield item
