"""One reader per source format, registered by name.

A reader turns a source into instruction records ``{instruction, input,
output, task, gold}``; lines it cannot read are reported as `Malformed` (file,
line, reason) and counted, never silently dropped. ``files(path, split)``
names the files a source reads: recipes check them before any work starts
and the data cache hashes them. Every local reader reads its files through
`files.read_text` / `files.text_lines`: UTF-8 with or without a BOM, lines
split at ``\n`` only (CRLF read as LF), and a file that is not UTF-8 a
`SourceError` naming the file, line and byte offset.

| format          | reads                                                    | task          |
|-----------------|----------------------------------------------------------|---------------|
| ``jsonl``       | generic ``{instruction, input, output}`` JSON Lines/list | its ``task``  |
| ``hub``         | ``{instruction, input, output}`` rows of any table       | its ``task``  |
|                 | `datasets` reads: json/jsonl/parquet/csv/tsv/arrow file, |               |
|                 | glob, folder, ``save_to_disk`` folder, hub id            |               |
| ``messages``    | OpenAI ``messages`` conversations (same paths as hub)    | ``chat``      |
| ``sharegpt``    | ShareGPT ``conversations`` (``from``/``value``)          | ``chat``      |
| ``prompt_completion`` | ``{prompt, completion}`` rows                      | ``generic``   |
| ``conll``       | token-per-line IOB NER (``tags: untyped`` or ``typed``)  | ner, ner-typed|
| ``pubmedqa``    | PubMedQA ``ori_pqal.json`` (+ ``test_ground_truth.json``)| pubmedqa      |
| ``mednli``      | MedNLI ``mli_*_v1.jsonl``                                | nli           |
| ``i2b2-2010-re``| BLUE i2b2-2010 relation TSV                              | re-i2b2       |
| ``gad``         | BioBERT GAD relation TSV                                 | re-gad        |
| ``hoc``         | BLUE Hallmarks of Cancer TSV                             | hoc           |
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from medtune.data.formats import chats, conll, hub, instructions, mednli, pubmedqa, tables, tsv
from medtune.data.formats.files import SourceError
from medtune.data.formats.records import Malformed, Record


@dataclass(frozen=True)
class Reader:
    read: Callable[..., Iterator[Record | Malformed]]
    """``read(path, **options)`` yields records and malformed-line reports."""
    local: bool = True
    """True when the source is a local file that must exist before a run."""
    files: Callable[[str, str], list[Path]] | None = None
    """``files(path, split)``: the local files the source reads; raises
    `SourceError` naming what is missing. ``None``: the path itself."""
    options: tuple[str, ...] = ("split",)
    """Source settings passed to ``read`` as keywords."""


READERS: dict[str, Reader] = {
    "jsonl": Reader(instructions.read, files=instructions.files, options=("split", "columns", "instruction")),
    "hub": Reader(hub.read, local=False, files=hub.files,
                  options=("split", "revision", "columns", "instruction")),
    "messages": Reader(chats.read_messages, local=False, files=tables.data_files,
                       options=("split", "revision", "columns")),
    "sharegpt": Reader(chats.read_sharegpt, local=False, files=tables.data_files,
                       options=("split", "revision", "columns")),
    "prompt_completion": Reader(chats.read_prompt_completion, local=False, files=tables.data_files,
                                options=("split", "revision", "columns")),
    "conll": Reader(conll.read, files=conll.files, options=("split", "tags")),
    "pubmedqa": Reader(pubmedqa.read, files=pubmedqa.files),
    "mednli": Reader(mednli.read, files=mednli.files),
    "i2b2-2010-re": Reader(tsv.read_i2b2_2010, files=tsv.files),
    "gad": Reader(tsv.read_gad, files=tsv.files),
    "hoc": Reader(tsv.read_hoc, files=tsv.files),
}

# Source settings that only some readers understand (checked in recipes).
_TABLES = ("hub", "messages", "sharegpt", "prompt_completion")
SETTINGS: dict[str, tuple[str, ...]] = {
    "tags": ("conll",),
    "revision": _TABLES,
    "task": ("jsonl", *_TABLES),
    "include": ("jsonl", *_TABLES),
    "columns": ("jsonl", *_TABLES),
    "instruction": ("jsonl", "hub"),
}

# The field names a source's `columns:` may map, per reader.
FIELDS: dict[str, tuple[str, ...]] = {
    "jsonl": ("instruction", "input", "output", "task", "source"),
    "hub": ("instruction", "input", "output", "task", "source"),
    "messages": ("messages", "task", "source"),
    "sharegpt": ("conversations", "task", "source"),
    "prompt_completion": ("prompt", "completion", "task", "source"),
}


def source_files(fmt: str, path: str, split: str) -> list[Path]:
    """The files a source reads (raises `SourceError` when one is missing)."""
    reader = READERS[fmt]
    if reader.files is None:
        if not Path(path).exists():
            raise SourceError(f"{path} does not exist")
        return [Path(path)]
    return reader.files(path, split)


__all__ = ["READERS", "SETTINGS", "FIELDS", "Reader", "Record", "Malformed", "SourceError", "source_files"]
