"""What a source's ``instructions:`` names: a pool, a list of strings, or a text file.

A source's ``instructions:`` takes one of three forms::

    instructions: ner-species                 # a pool of medtune's (`medtune.data.templates.POOLS`)
    instructions: ["Tag the species.", ...]   # your own wording, drawn from as a pool
    instructions: prompts/species.txt         # one instruction per line, beside the recipe

A string with no ``/`` and no ``.`` is a pool name (every pool name is a
lower-case word with dashes); any other string is a text file, resolved
relative to the recipe that names it, like every other path. Blank lines of
the file are skipped; nothing else is changed (no comment syntax: a ``#``
starts an instruction like any other character).

An instruction may hold ``{types}``: it is replaced by the entity types the
source's answers use, in order of first appearance (``PROTEIN, DNA,
CELL_TYPE``), so a typed NER source's instruction names exactly the tags it
is trained to write, whatever the corpus (`entity_types`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

TYPES = "{types}"


def is_file(spec: str) -> bool:
    """Whether a string ``instructions:`` names a text file rather than a pool (see the module doc)."""
    return "/" in spec or "." in spec


def read_file(path: str | Path) -> tuple[str, ...]:
    """The instructions of a text file, one per non-blank line (UTF-8), stripped.

    Raises `ValueError` with a one-line reason when the file is missing, is
    not UTF-8 text or holds no instruction.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file (a text file with one instruction per line)")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{p}: not UTF-8 text (byte {err.start})") from None
    lines = tuple(line.strip() for line in text.split("\n") if line.strip())
    if not lines:
        raise ValueError(f"{p}: holds no instruction (write one per line)")
    return lines


def choices(spec: str | Sequence[str]) -> tuple[str, ...]:
    """The instructions `spec` (a pool name, a list or a file path) draws from.

    Raises `ValueError` (one line) for an unknown pool, an empty list, an
    item that is not a non-blank string, or a bad file (`read_file`).
    """
    from medtune.data.templates import POOLS

    if isinstance(spec, str):
        if is_file(spec):
            return read_file(spec)
        if spec not in POOLS:
            import difflib

            near = difflib.get_close_matches(spec, POOLS, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ValueError(f"unknown instruction pool '{spec}': {hint}known: {', '.join(sorted(POOLS))} "
                             "(or give a list of instructions, or a text file with one per line)")
        return POOLS[spec]
    items = list(spec)
    if not items:
        raise ValueError("an empty list: give at least one instruction")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"item {i} is {item!r}: every instruction must be a non-blank string")
    return tuple(item.strip() for item in items)


def entity_types(gold_tags: Iterable[Sequence[str]]) -> list[str]:
    """The entity types of typed BIO tag sequences, in order of first appearance.

    ``entity_types([("B-PROTEIN", "I-PROTEIN", "O"), ("B-DNA",)]) == ["PROTEIN", "DNA"]``;
    untyped tags (``B``, ``I``, ``O``) give none.
    """
    seen: dict[str, None] = {}
    for tags in gold_tags:
        for tag in tags or ():
            if isinstance(tag, str) and tag[:2] in ("B-", "I-"):
                seen.setdefault(tag[2:], None)
    return list(seen)


def fill(instruction: str, types: Sequence[str]) -> str:
    """`instruction` with ``{types}`` replaced by ``"A, B and C"`` (no other brace is touched)."""
    if TYPES not in instruction:
        return instruction
    listed = ", ".join(types[:-1]) + (" and " if len(types) > 1 else "") + (types[-1] if types else "")
    return instruction.replace(TYPES, listed or "none")
