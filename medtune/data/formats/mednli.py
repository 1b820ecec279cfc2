"""MedNLI (credentialed, PhysioNet): ``mli_{train,dev,test}_v1.jsonl``.

Each line holds ``sentence1`` (premise), ``sentence2`` (hypothesis) and
``gold_label`` (entailment, contradiction or neutral)::

    input:  "Sentence 1: <sentence1>\\nSentence 2: <sentence2>"
    output: "Entailment" | "Contradiction" | "Neutral"
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from medtune.data import tasks
from medtune.data.formats.files import split_file, text_lines
from medtune.data.formats.records import Malformed, Record

NAMES = ("mli_{split}_v1.jsonl", "{split}.jsonl")


def files(path: str, split: str = "train") -> list[Path]:
    return [split_file(path, split, NAMES)]


def read(path: str, split: str = "train") -> Iterator[Record | Malformed]:
    f = files(path, split)[0]
    for lineno, line in text_lines(f):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield Malformed(str(f), lineno, f"bad JSON: {err.msg}")
            continue
        yield _record(obj, str(f), lineno)


def _record(obj, path: str, line: int) -> Record | Malformed:
    if not isinstance(obj, dict):
        return Malformed(path, line, "not a JSON object")
    for key in ("sentence1", "sentence2", "gold_label"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            return Malformed(path, line, f"missing string field '{key}'")
    label = tasks.canonical_label(obj["gold_label"], tasks.NLI_LABELS)
    if label is None:
        return Malformed(path, line, f"unknown gold_label {obj['gold_label']!r} "
                                     "(expected entailment, contradiction or neutral)")
    text = f"Sentence 1: {obj['sentence1'].strip()}\nSentence 2: {obj['sentence2'].strip()}"
    return Record("", text, label, "nli", label)
