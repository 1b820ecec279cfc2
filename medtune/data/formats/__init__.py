"""One reader per source format, registered by name.

A reader turns a source into instruction records ``{instruction, input,
output, task}``; lines it cannot read are reported as `Malformed` (file,
line, reason) and counted, never silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from medtune.data.formats.records import Malformed, Record
from medtune.data.formats import instructions


@dataclass(frozen=True)
class Reader:
    read: Callable[[str], Iterator[Record | Malformed]]
    """Yields records and malformed-line reports from a path."""
    local: bool = True
    """True when the source is a local file that must exist before a run."""


READERS: dict[str, Reader] = {
    "jsonl": Reader(instructions.read),
}

__all__ = ["READERS", "Reader", "Record", "Malformed"]
