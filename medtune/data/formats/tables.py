"""Tables through `datasets`' own builders: files, folders, globs, saved datasets and hub ids.

Every reader that takes rows from `datasets` (``hub``, ``messages``,
``sharegpt``, ``prompt_completion``) loads its source here, so all of them
accept the same paths:

| path                                   | loaded with                                              |
|----------------------------------------|----------------------------------------------------------|
| ``x.jsonl``, ``x.json`` (lines or list)| ``load_dataset("json", data_files=[x])``                 |
| ``x.parquet``                          | ``load_dataset("parquet", data_files=[x])``              |
| ``x.csv``, ``x.tsv``                   | ``load_dataset("csv", data_files=[x], features=text)``   |
| ``x.arrow``                            | ``load_dataset("arrow", data_files=[x])``                |
| ``"shards/*.parquet"`` (a glob)        | each matched file as above, in sorted order              |
| a folder of such files                 | the split's files, as ``load_dataset(folder)`` finds them|
| a ``Dataset.save_to_disk`` folder      | ``load_from_disk`` (its ``split`` for a ``DatasetDict``) |
| a hub id (``org/name``)                | ``load_dataset(id, split=..., revision=...)``            |

The builder of a file is the one `datasets` maps its extension to
(``datasets.packaged_modules._EXTENSION_TO_MODULE``). Files are loaded one at
a time so a bad row is named by its file and row number (1-based, the
header of a CSV not counted). CSV and TSV cells are read as text, with
``keep_default_na=False``: pandas would otherwise turn an answer ``None``,
``NA`` or ``null`` into a missing value and ``007`` into the number 7.
"""
from __future__ import annotations

import csv
import glob
import logging
from pathlib import Path
from typing import Any, Iterator

from medtune.data.formats.files import SourceError, text_lines

_SAVED = ("dataset_info.json", "dataset_dict.json", "state.json")
TABLE_BUILDERS = ("json", "parquet", "csv", "arrow")
"""The `datasets` builders a local file may be read with."""
_MAGIC = ("*", "?", "[")


def is_glob(path: str) -> bool:
    return any(c in path for c in _MAGIC)


TABLE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".csv", ".tsv", ".arrow")


def looks_local(path: str) -> bool:
    """A local path (file, folder, glob, a name ending in a table file's suffix) rather than a hub id."""
    return (path.startswith(("/", "./", "../", "~")) or is_glob(path) or Path(path).exists()
            or path.lower().endswith(TABLE_SUFFIXES))


def is_saved(path: str) -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    p = Path(path)
    return p.is_dir() and any((p / name).is_file() for name in _SAVED)


def builder(file: Path) -> tuple[str, dict]:
    """The `datasets` builder and its options for a data file, by its extension.

    Raises `SourceError` for an extension that is no table (``.txt``, ``.png``, ...).
    """
    from datasets.packaged_modules import _EXTENSION_TO_MODULE

    name, options = _EXTENSION_TO_MODULE.get(file.suffix.lower(), (None, {}))
    if name not in TABLE_BUILDERS:
        raise SourceError(f"{file}: not a table file medtune reads (known: .json, .jsonl, .parquet, "
                          f".csv, .tsv, .arrow, or a save_to_disk folder)")
    return name, dict(options)


def data_files(path: str, split: str = "train") -> list[Path]:
    """The local data files behind `path` (none for a hub id; a saved folder's own files).

    Raises `SourceError` when the path does not exist, a glob matches no file,
    or a folder has no file for `split`.
    """
    if not looks_local(path):
        return []
    p = Path(path).expanduser()
    if is_glob(path):
        found = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
        if not found:
            raise SourceError(f"{path}: the pattern matches no file")
        return found
    if not p.exists():
        raise SourceError(f"{path} does not exist")
    if p.is_file():
        return [p]
    if is_saved(path):
        return sorted(q for q in p.rglob("*") if q.is_file())
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        by_split = DataFilesDict.from_local_or_remote(get_data_patterns(str(p)), base_path=str(p))
    except EmptyDatasetError:
        raise SourceError(f"{path}: no data files in this folder") from None
    if split not in by_split:
        raise SourceError(f"{path}: no file for split '{split}' (splits: {', '.join(by_split)})")
    return sorted(Path(f) for f in by_split[split])


def tables(path: str, split: str = "train", revision: str | None = None) -> Iterator[tuple[str, Any]]:
    """``(where, dataset)`` per table of `path`: one per local file, or the whole saved/hub dataset.

    `where` names the table in messages (the file, or `path` itself). Raises
    `SourceError` (one line) when a table cannot be loaded.
    """
    import datasets

    datasets.disable_progress_bars()
    if is_saved(path):
        yield path, _saved(path, split)
        return
    if looks_local(path):
        for f in data_files(path, split):
            yield str(f), _file(f)
        return
    try:
        yield path, datasets.load_dataset(path, split=split, revision=revision)
    except Exception as err:  # datasets raises many types; the user needs the one line
        raise SourceError(f"{path}: cannot load split '{split}' with datasets: {_first(err)}") from None


def rows(path: str, split: str = "train", revision: str | None = None,
         columns: dict[str, str] | None = None,
         need: tuple[str, ...] = ()) -> Iterator[tuple[str, int, dict]]:
    """``(where, row number, row)`` for every row of every table of `path`, numbered from 1 per table.

    `columns` maps medtune's field names to the table's column names
    (``{"output": "answer"}``): each row is given under medtune's names.
    Raises `SourceError` naming the table and its columns when one of `need`
    (after mapping) is missing.
    """
    columns = columns or {}
    for where, ds in tables(path, split, revision):
        names = list(ds.column_names)
        rename = {theirs: ours for ours, theirs in columns.items()}
        missing = [columns.get(c, c) for c in need if columns.get(c, c) not in names]
        missing += [theirs for theirs in rename if theirs not in names and theirs not in missing]
        if missing:
            raise SourceError(f"{where}: no column {', '.join(repr(c) for c in missing)} "
                              f"(columns: {', '.join(names) or 'none'})")
        for i, row in enumerate(ds, 1):
            if rename:
                row = {rename.get(k, k): v for k, v in row.items() if k not in columns or k in rename}
            yield where, i, row


def _saved(path: str, split: str):
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(path)
    except Exception as err:
        raise SourceError(f"{path}: cannot load the saved dataset: {_first(err)}") from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise SourceError(f"{path}: no split '{split}' (splits: {', '.join(ds)})")
        ds = ds[split]
    return ds


def _file(f: Path):
    import datasets

    name, options = builder(f)
    if name in ("json", "csv"):  # pyarrow reads bytes that are not UTF-8 and fails later, on a row
        for _ in text_lines(f):  # raises SourceError naming the line and byte offset
            pass
    if name == "csv":  # every cell as text; see the module's docstring
        header = _csv_header(f, options.get("sep", ","))
        options.update(features=datasets.Features({c: datasets.Value("string") for c in header}),
                       keep_default_na=False)
    quiet = logging.getLogger("datasets")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # datasets logs the cause on its own line before raising
    try:
        return datasets.load_dataset(name, data_files=[str(f)], split="train", **options)
    except Exception as err:
        raise SourceError(f"{f}: cannot read it as {name} with datasets: {_first(err)}") from None
    finally:
        quiet.setLevel(level)


def _csv_header(f: Path, sep: str) -> list[str]:
    with open(f, "rb") as fh:
        raw = fh.readline()
    try:
        first = raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SourceError(f"{f}:1: not UTF-8 text; save the file as UTF-8") from None
    header = next(csv.reader([first], delimiter=sep), [])
    if not header or len(set(header)) != len(header):
        raise SourceError(f"{f}:1: the header row must name each column once (found: {first!r})")
    return header


def _first(err: BaseException) -> str:
    """The first line of the innermost cause (datasets wraps pyarrow's "JSON parse error ... in row 0")."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
