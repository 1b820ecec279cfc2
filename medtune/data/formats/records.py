"""The record every reader yields, and the report of a line it could not read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Record:
    instruction: str
    """The record's own instruction; empty for corpus readers, whose records
    draw one from their source's instruction pool (`medtune.data.templates`)."""
    input: str
    output: str
    task: str = "generic"
    """A name in `medtune.data.tasks.TASKS` for corpus readers (``ner``,
    ``re-gad``, ...), or any name a generic source gives."""
    gold: Any = None
    """The labels `output` encodes, as `medtune.data.tasks.parse` returns them
    (NER tags, a label, HoC labels); ``None`` for free text."""
    source: str | None = None
    """The sub-source a mixed dataset names in its ``source`` field, if any."""
    messages: tuple[tuple[str, str], ...] | None = None
    """A conversation's ``(role, content)`` turns (roles ``system``, ``user``,
    ``assistant``), or ``None`` for a single-turn record. The template trains
    every assistant turn; `instruction` then holds the first user turn and
    `output` the last assistant turn (for statistics), `input` is empty."""


@dataclass(frozen=True)
class Malformed:
    path: str
    line: int
    reason: str
    unit: str = "line"
    """``line`` (a text file's line) or ``row`` (a table's row, numbered from 1)."""

    def __str__(self) -> str:
        if self.unit == "row":
            return f"{self.path}: row {self.line}: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"
