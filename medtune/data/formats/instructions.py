"""Generic instruction data: JSON Lines (one object per line) or a JSON list.

Each object needs ``instruction`` and ``output`` strings; ``input`` may be
empty or absent and ``task`` names the task for statistics::

    {"instruction": "Answer yes, no or maybe.", "input": "Context: ...", "output": "yes", "task": "qa"}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from medtune.data.formats.records import Malformed, Record


def read(path: str) -> Iterator[Record | Malformed]:
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            yield Malformed(path, err.lineno, f"bad JSON: {err.msg}")
            return
        for i, obj in enumerate(items, 1):
            yield _record(obj, path, i)
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield Malformed(path, lineno, f"bad JSON: {err.msg}")
            continue
        yield _record(obj, path, lineno)


def _record(obj: Any, path: str, line: int) -> Record | Malformed:
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
    return Record(obj["instruction"], inp, obj["output"], str(obj.get("task") or "generic"))
