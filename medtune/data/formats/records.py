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


@dataclass(frozen=True)
class Malformed:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"
