"""Hugging Face datasets: a hub id, a local data directory, or a ``save_to_disk`` folder.

Rows need ``instruction`` and ``output`` columns (``input``, ``task`` and
``source`` are optional) and are checked like generic JSON Lines; the row
number stands in for the line. ``nlpie/Llama2-MedTuned-Instructions`` reads
as it is, its ``source`` column naming each row's origin (a source's
``include:`` keeps only the listed origins)::

    - {path: nlpie/Llama2-MedTuned-Instructions, format: hub, split: train, revision: <commit>}

A hub id is loaded with ``datasets.load_dataset(id, split=..., revision=...)``
(cached by `datasets`; offline, set ``HF_DATASETS_OFFLINE=1`` after a first
download); a folder written by ``Dataset.save_to_disk`` with ``load_from_disk``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from medtune.data.formats.files import SourceError
from medtune.data.formats.instructions import record
from medtune.data.formats.records import Malformed, Record

_SAVED = ("dataset_info.json", "dataset_dict.json", "state.json")


def looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or Path(path).exists()


def files(path: str, split: str = "train") -> list[Path]:
    """The local files behind `path` (none for a hub id)."""
    if not looks_local(path):
        return []
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{path} does not exist")
    return sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]


def read(path: str, split: str = "train", revision: str | None = None) -> Iterator[Record | Malformed]:
    ds = _load(path, split, revision)
    missing = [c for c in ("instruction", "output") if c not in ds.column_names]
    if missing:
        raise SourceError(f"{path}: no column {', '.join(repr(c) for c in missing)} "
                          f"(columns: {', '.join(ds.column_names)})")
    for i, row in enumerate(ds, 1):
        yield record(row, path, i)


def _load(path: str, split: str, revision: str | None):
    from datasets import DatasetDict, load_dataset, load_from_disk

    p = Path(path)
    try:
        if p.is_dir() and any((p / name).is_file() for name in _SAVED):
            ds = load_from_disk(str(p))
            if isinstance(ds, DatasetDict):
                if split not in ds:
                    raise SourceError(f"{path}: no split '{split}' (splits: {', '.join(ds)})")
                ds = ds[split]
            return ds
        return load_dataset(path, split=split, revision=revision)
    except SourceError:
        raise
    except Exception as err:  # datasets raises many types; the user needs the one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SourceError(f"{path}: cannot load split '{split}' with datasets: {first}") from None
