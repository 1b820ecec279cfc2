"""Where a source's files are: a file as given, or a split's file inside a directory."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


class SourceError(ValueError):
    """A source that cannot be read at all (missing file, unknown split); one line."""


def split_file(path: str, split: str, names: Sequence[str]) -> Path:
    """`path` itself when it is a file; else the first ``names`` (formatted with
    ``{split}``) that exists inside the directory `path`.

    >>> split_file("data/ncbi_disease", "train", ["{split}.tsv", "{split}.txt"])  # doctest: +SKIP
    PosixPath('data/ncbi_disease/train.tsv')
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise SourceError(f"{path} does not exist")
    tried = [n.format(split=split) for n in names]
    for name in tried:
        if (p / name).is_file():
            return p / name
    raise SourceError(f"{path}: no file for split '{split}' (looked for {', '.join(tried)})")
