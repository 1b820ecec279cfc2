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
| ``hub``         | a Hugging Face dataset (hub id, data dir, saved dataset) | its ``task``  |
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

from medtune.data.formats import conll, hub, instructions, mednli, pubmedqa, tsv
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
    "jsonl": Reader(instructions.read, files=instructions.files),
    "hub": Reader(hub.read, local=False, files=hub.files, options=("split", "revision")),
    "conll": Reader(conll.read, files=conll.files, options=("split", "tags")),
    "pubmedqa": Reader(pubmedqa.read, files=pubmedqa.files),
    "mednli": Reader(mednli.read, files=mednli.files),
    "i2b2-2010-re": Reader(tsv.read_i2b2_2010, files=tsv.files),
    "gad": Reader(tsv.read_gad, files=tsv.files),
    "hoc": Reader(tsv.read_hoc, files=tsv.files),
}

# Source settings that only some readers understand (checked in recipes).
SETTINGS: dict[str, tuple[str, ...]] = {
    "tags": ("conll",),
    "revision": ("hub",),
    "task": ("jsonl", "hub"),
    "include": ("jsonl", "hub"),
}


def source_files(fmt: str, path: str, split: str) -> list[Path]:
    """The files a source reads (raises `SourceError` when one is missing)."""
    reader = READERS[fmt]
    if reader.files is None:
        if not Path(path).exists():
            raise SourceError(f"{path} does not exist")
        return [Path(path)]
    return reader.files(path, split)


__all__ = ["READERS", "SETTINGS", "Reader", "Record", "Malformed", "SourceError", "source_files"]
