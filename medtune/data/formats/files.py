"""Where a source's files are, and how every reader reads their text.

Every reader opens its files through `read_text` or `text_lines`, so all of
them treat encodings and line ends alike:

- UTF-8, with or without a byte order mark (Windows' "UTF-8 with BOM"); the
  BOM is dropped, never read as part of the first record;
- lines end at ``\\n`` only, a trailing ``\\r`` (CRLF files) removed. U+2028,
  U+2029, U+0085, form feeds and lone ``\\r`` are characters inside a line:
  JSON allows them unescaped in strings, and ``str.splitlines()`` would cut
  a record in two there;
- a file that is not UTF-8 is a `SourceError` naming the file, the line and
  the byte offset of the first bad byte (one line, not a traceback).
"""
from __future__ import annotations

import codecs
from pathlib import Path
from typing import Iterator, Sequence


class SourceError(ValueError):
    """A source that cannot be read at all (missing file, unknown split, not UTF-8); one line."""


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


def _not_utf8(path: Path, err: UnicodeDecodeError, line: int, offset: int) -> SourceError:
    bad = err.object[err.start:err.start + 1].hex()
    return SourceError(f"{path}:{line}: not UTF-8 text (byte 0x{bad} at byte offset {offset}: "
                       f"{err.reason}); save the file as UTF-8")


def read_text(path: str | Path) -> str:
    """The whole file as text: UTF-8, a leading BOM dropped.

    Raises `SourceError` (``FILE:LINE: not UTF-8 text (byte 0xe9 at byte
    offset 1234 ...)``) when the bytes are not UTF-8.
    """
    p = Path(path)
    data = p.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        raise _not_utf8(p, err, data.count(b"\n", 0, offset) + 1, offset) from None


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for every line of a UTF-8 file, numbered from 1.

    Lines are split at ``\\n`` only; the ``\\n`` and one ``\\r`` before it are
    removed, and a leading BOM is dropped from line 1. Streams the file (a
    line at a time). Raises `SourceError` at the first line that is not UTF-8,
    naming its byte offset in the file.
    """
    p = Path(path)
    offset = 0
    with open(p, "rb") as fh:  # binary lines end at b"\n" only
        for lineno, raw in enumerate(fh, 1):
            start = offset
            offset += len(raw)
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
                start += len(codecs.BOM_UTF8)
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(p, err, lineno, start + err.start) from None
