"""Generic instruction data: JSON Lines (one object per line) or a JSON list.

Each object needs ``instruction`` and ``output`` strings; ``input`` may be
empty or absent, ``task`` names the task for statistics and ``source`` the
sub-source of a mixed set (ChatDoctor's ``HealthCareMagic-100k.json`` and
PMC-LLaMA's instructions read as they are)::

    {"instruction": "Answer yes, no or maybe.", "input": "Context: ...", "output": "yes", "task": "qa"}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from medtune.data.formats.files import split_file
from medtune.data.formats.records import Malformed, Record

NAMES = ("{split}.jsonl", "{split}.json")


def files(path: str, split: str = "train") -> list[Path]:
    return [split_file(path, split, NAMES)]


def read(path: str, split: str = "train") -> Iterator[Record | Malformed]:
    p = files(path, split)[0]
    path = str(p)
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            yield Malformed(path, err.lineno, f"bad JSON: {err.msg}")
            return
        for i, obj in enumerate(items, 1):
            yield record(obj, path, i)
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield Malformed(path, lineno, f"bad JSON: {err.msg}")
            continue
        yield record(obj, path, lineno)


def record(obj: Any, path: str, line: int) -> Record | Malformed:
    """A record from one ``{instruction, input, output[, task, source]}`` mapping."""
    if not isinstance(obj, dict):
        return Malformed(path, line, "not a JSON object")
    for key in ("instruction", "output"):
        if not isinstance(obj.get(key), str):
            return Malformed(path, line, f"missing string field '{key}'")
    if not obj["output"].strip():
        return Malformed(path, line, "empty output")
    inp = obj.get("input") or ""
    if not isinstance(inp, str):
        return Malformed(path, line, "field 'input' is not a string")
    source = obj.get("source")
    return Record(obj["instruction"], inp, obj["output"], str(obj.get("task") or "generic"),
                  source=str(source) if source is not None else None)
