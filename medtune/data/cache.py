"""The data cache's root and the digest of a recipe's sources.

Shared by `medtune.data.prepare` (which caches tokenized data under the root)
and `medtune.data.tokenizer` (which names a trained tokenizer's directory by
the sources' digest), so neither has to import the other for them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from medtune.config import Recipe
from medtune.data.formats import source_files
from medtune.data.instructions import is_file, read_file
from medtune.data.mixture import source_name


def cache_root(recipe: Recipe) -> Path:
    """The data cache: ``data.cache_dir``, else ``$MEDTUNE_CACHE``, else ``~/.cache/medtune``."""
    if recipe.data.cache_dir:
        return Path(recipe.data.cache_dir)
    return Path(os.environ.get("MEDTUNE_CACHE", Path.home() / ".cache" / "medtune"))


_NEWER = ("columns", "instruction")  # settings left out when unset, so older keys stay the same


def sources_digest(recipe: Recipe) -> str:
    """A hash of every source's settings and file bytes (hub ids: id and revision).

    Names the tokenizer medtune trains from the data, so it depends on the
    data alone: an upgrade of medtune's code never retrains it under a run.
    """
    h = hashlib.sha256()
    for src in recipe.data.sources:
        settings = {k: v for k, v in dataclasses.asdict(src).items()
                    if k != "path" and not (k in _NEWER and v is None)}
        if isinstance(src.instructions, str) and is_file(src.instructions):  # its lines, not where it is
            settings["instructions"] = list(read_file(src.instructions))
        h.update(json.dumps([settings, source_name(src)], sort_keys=True).encode())
        found = source_files(src.format, src.path, src.split)
        if not found:  # a hub id
            h.update(src.path.encode())
        for f in found:
            hash_path(h, f)
    return h.hexdigest()[:12]


def hash_path(h, path: Path) -> None:
    """Feed `path` (a file, or a directory's files by relative name) into the hash `h`, 1 MiB at a time."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
