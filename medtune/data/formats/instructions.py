"""Generic instruction data: JSON Lines (one object per line) or a JSON list.

Each object needs ``instruction`` and ``output`` strings; ``input`` may be
empty or absent, ``task`` names the task for statistics and ``source`` the
sub-source of a mixed set (ChatDoctor's ``HealthCareMagic-100k.json`` and
PMC-LLaMA's instructions read as they are)::

    {"instruction": "Answer yes, no or maybe.", "input": "Context: ...", "output": "yes", "task": "qa"}
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from medtune.data.formats.files import SourceError, read_text, split_file, text_lines
from medtune.data.formats.records import Malformed, Record

NAMES = ("{split}.jsonl", "{split}.json")


def files(path: str, split: str = "train") -> list[Path]:
    return [split_file(path, split, NAMES)]


def read(path: str, split: str = "train", columns: dict[str, str] | None = None,
         instruction: str | None = None) -> Iterator[Record | Malformed]:
    """Records of a JSON Lines file or a JSON list, each located at its line.

    `columns` maps field names to the file's keys (``{"output": "answer"}``);
    `instruction` is every record's instruction (the file's own ignored).
    Raises `SourceError` for a file that is not JSON (parquet, csv, arrow:
    ``format: hub`` reads those).
    """
    p = files(path, split)[0]
    if p.suffix.lower() in (".parquet", ".csv", ".tsv", ".arrow"):
        raise SourceError(f"{p} is not JSON Lines or a JSON list: read it with format: hub, which reads "
                          "any table datasets reads (json, jsonl, parquet, csv, tsv, arrow)")
    for item in _read(p):
        yield item if isinstance(item, Malformed) else _mapped(item, columns, instruction)


def _mapped(item: tuple[Any, str, int, str], columns: dict[str, str] | None,
            instruction: str | None) -> Record | Malformed:
    obj, path, line, where = item
    if isinstance(obj, dict) and columns:
        rename = {theirs: ours for ours, theirs in columns.items()}
        obj = {rename.get(k, k): v for k, v in obj.items() if k not in columns or k in rename}
    if isinstance(obj, dict) and instruction is not None:
        obj = {**obj, "instruction": instruction}
    return record(obj, path, line, where)


def _read(p: Path) -> Iterator[tuple[Any, str, int, str] | Malformed]:
    """``(object, file, line, where)`` per item of the file, or a `Malformed` for a bad JSON line."""
    path = str(p)
    if p.suffix == ".json":
        text = read_text(p)
        if text.lstrip().startswith("["):
            yield from _read_list(text, path)
            return
        lines: Iterator[tuple[int, str]] = ((i, line.removesuffix("\r"))
                                            for i, line in enumerate(text.split("\n"), 1))
    else:
        lines = text_lines(p)
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield Malformed(path, lineno, f"bad JSON: {err.msg}")
            continue
        yield obj, path, lineno, ""


def _read_list(text: str, path: str) -> Iterator[tuple[Any, str, int, str] | Malformed]:
    """The items of a JSON list, each located at the line where it starts.

    The list is decoded item by item (``json.JSONDecoder.raw_decode``) to know
    where each starts; a syntax error anywhere is one `Malformed` at its line
    and no item is yielded, as ``json.loads`` of the whole file would have it.
    """
    try:
        found = _items(text)
    except json.JSONDecodeError as err:
        yield Malformed(path, err.lineno, f"bad JSON: {err.msg}")
        return
    for i, (line, obj) in enumerate(found):
        yield obj, path, line, f"item {i + 1}: "


_WS = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


def _items(text: str) -> list[tuple[int, Any]]:
    """``(line, item)`` for each item of the JSON list `text`; raises `json.JSONDecodeError`."""
    decode = json.JSONDecoder().raw_decode
    out: list[tuple[int, Any]] = []
    at = _WS.match(text, _WS.match(text).end() + 1).end()  # past "["
    line, counted = 1, 0
    while at < len(text) and text[at] != "]":
        line += text.count("\n", counted, at)
        counted = at
        obj, at = decode(text, at)
        out.append((line, obj))
        at = _WS.match(text, at).end()
        if at < len(text) and text[at] == ",":
            at = _WS.match(text, at + 1).end()
            if at >= len(text) or text[at] == "]":
                json.loads(text)  # a trailing comma: raises the decoder's own message
        elif at >= len(text) or text[at] != "]":
            break
    if at >= len(text) or text[at] != "]" or _WS.match(text, at + 1).end() != len(text):
        json.loads(text)  # raises the decoder's own message at the right line
    return out


_JSON_TYPES = {dict: "object", list: "list", str: "string", int: "int", float: "float",
               bool: "bool", type(None): "null"}


def _kind(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def record(obj: Any, path: str, line: int, where: str = "") -> Record | Malformed:
    """A record from one ``{instruction, input, output[, task, source]}`` mapping.

    A `Malformed` (at `path`:`line`, its reason prefixed by `where`) when a
    field is missing or not a string, or the output is empty; a missing field
    lists the keys the object has (``'instruction' missing (keys: messages)``).
    """
    def bad(reason: str) -> Malformed:
        return Malformed(path, line, where + reason)

    if not isinstance(obj, dict):
        return bad(f"not a JSON object (found {_kind(obj)})")
    for key in ("instruction", "output"):
        if key not in obj:
            keys = ", ".join(map(str, obj)) or "none"
            return bad(f"missing string field '{key}' (keys: {keys})")
        if not isinstance(obj[key], str):
            return bad(f"'{key}' must be a string, not {_kind(obj[key])}")
    if not obj["output"].strip():
        return bad("empty output")
    inp = obj.get("input") or ""
    if not isinstance(inp, str):
        return bad(f"'input' must be a string, not {_kind(inp)}")
    for key, value in (("instruction", obj["instruction"]), ("input", inp), ("output", obj["output"])):
        bad_at = _lone_surrogate(value)
        if bad_at is not None:  # legal as a JSON escape ("\ud800"), but not text: UTF-8 cannot encode it
            return bad(f"'{key}' holds a lone UTF-16 surrogate (U+{ord(value[bad_at]):04X} at character "
                       f"{bad_at}), which is not text; repair or drop the record")
    source = obj.get("source")
    return Record(obj["instruction"], inp, obj["output"], str(obj.get("task") or "generic"),
                  source=str(source) if source is not None else None)


def _lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate (U+D800-U+DFFF) in `text`, or None.

    ``json.loads('"\\ud800"')`` yields such a character (scraped text and
    UTF-16 round trips carry them); every tokenizer and Arrow then fail on it
    with ``UnicodeEncodeError: ... surrogates not allowed``.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None
