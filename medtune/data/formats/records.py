"""The record every reader yields, and the report of a line it could not read."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    instruction: str
    input: str
    output: str
    task: str = "generic"


@dataclass(frozen=True)
class Malformed:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"
