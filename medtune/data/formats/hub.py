"""``{instruction, input, output}`` rows from any table `datasets` reads: a file, glob, folder,
``save_to_disk`` folder or hub id (`medtune.data.formats.tables`).

Rows need ``instruction`` and ``output`` columns (``input``, ``task`` and
``source`` are optional) and are checked like generic JSON Lines; a bad row
is named by its file and row number. A source's ``columns:`` maps these names
to the table's own, and ``instruction:`` gives every record one fixed
instruction when the table has none::

    - {path: qa.csv, format: hub, columns: {input: question, output: answer},
       instruction: "Answer the medical question."}

``nlpie/Llama2-MedTuned-Instructions`` reads as it is, its ``source`` column
naming each row's origin (a source's ``include:`` keeps only the listed
origins); see ``recipes/data/llama2-medtuned-instructions.yaml``.
A hub id is loaded with ``datasets.load_dataset(id, split=..., revision=...)``
(cached by `datasets`; offline, set ``HF_DATASETS_OFFLINE=1`` after a first download).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import medtune.data.formats.tables as tables
from medtune.data.formats.instructions import record
from medtune.data.formats.records import Malformed, Record
from medtune.data.formats.tables import looks_local  # noqa: F401 (importable from here)


def files(path: str, split: str = "train") -> list[Path]:
    """The local files behind `path` (none for a hub id); raises `SourceError` when missing."""
    return tables.data_files(path, split)


def read(path: str, split: str = "train", revision: str | None = None,
         columns: dict[str, str] | None = None, instruction: str | None = None) -> Iterator[Record | Malformed]:
    need = ("output",) if instruction is not None else ("instruction", "output")
    for where, i, row in tables.rows(path, split, revision, columns, need=need):
        if instruction is not None:
            row = {**row, "instruction": instruction}
        got = record(row, where, i)
        yield dataclasses.replace(got, unit="row") if isinstance(got, Malformed) else got
