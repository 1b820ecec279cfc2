"""Build the training data of a recipe once, cache it, and reuse it.

``prepare(recipe)`` reads every source, renders and tokenizes the records,
and saves them with `datasets` (Arrow) under a directory named by a
fingerprint of everything that changes the tokens: the sources' bytes, the
readers, the template, ``max_tokens``/``overlong`` and the tokenizer. A second
call with the same inputs is a cache hit. Every process may call it: a file
lock lets the first one build while the others wait, and the cache appears
by an atomic rename only when complete, so a crash never leaves a half cache.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from medtune.config import Recipe, RecipeError, SourceConfig
from medtune.data import templates, tokenize
from medtune.data.formats import READERS, Malformed, Record

DATA_VERSION = "1"  # bump when the cached columns or their meaning change
COLUMNS = ("input_ids", "labels", "length", "n_labels", "source", "task")


@dataclass
class SourceStats:
    records: int = 0
    tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    malformed: int = 0
    first_problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Prepared:
    dataset: object            # datasets.Dataset with COLUMNS
    path: Path
    fingerprint: str
    stats: dict
    cache_hit: bool


def cache_root(recipe: Recipe) -> Path:
    if recipe.data.cache_dir:
        return Path(recipe.data.cache_dir)
    return Path(os.environ.get("MEDTUNE_CACHE", Path.home() / ".cache" / "medtune"))


def source_name(src: SourceConfig) -> str:
    return src.name or Path(src.path).stem


def prepare(recipe: Recipe, recipe_file: str = "recipe", log=print) -> Prepared:
    """Tokenized, cached training data of `recipe` (built on first use)."""
    from datasets import load_from_disk

    root = cache_root(recipe)
    root.mkdir(parents=True, exist_ok=True)
    _ensure_tokenizer(recipe, root)
    fp = fingerprint(recipe)
    final = root / "data" / fp
    with _locked(root / "data" / f"{fp}.lock"):
        hit = (final / "stats.json").is_file()
        if not hit:
            _build(recipe, recipe_file, final, fp, log)
    stats = json.loads((final / "stats.json").read_text())
    return Prepared(load_from_disk(str(final / "arrow")), final, fp, stats, hit)


def fingerprint(recipe: Recipe) -> str:
    from medtune.data.tokenizer import location

    h = hashlib.sha256()
    d = recipe.data
    h.update(json.dumps({"v": DATA_VERSION, "template": d.template, "max_tokens": d.max_tokens,
                         "overlong": d.overlong, "sources": sources_digest(recipe)}).encode())
    tok = location(recipe)
    if Path(tok).is_dir():
        _hash_path(h, Path(tok))
    else:
        h.update(f"{tok}@{recipe.model.revision}".encode())
    return h.hexdigest()[:16]


def sources_digest(recipe: Recipe) -> str:
    """A hash of every source's reader, name and bytes (hub sources: their id)."""
    h = hashlib.sha256()
    for src in recipe.data.sources:
        h.update(json.dumps([src.format, source_name(src)]).encode())
        if READERS[src.format].local:
            _hash_path(h, Path(src.path))
        else:
            h.update(src.path.encode())
    return h.hexdigest()[:12]


def _hash_path(h, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)


@contextlib.contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_sources(recipe: Recipe) -> tuple[list[tuple[str, Record]], dict[str, SourceStats]]:
    """Every record of every source, in recipe order, with per-source counts."""
    records: list[tuple[str, Record]] = []
    stats: dict[str, SourceStats] = {}
    for src in recipe.data.sources:
        name = source_name(src)
        st = stats.setdefault(name, SourceStats())
        for item in READERS[src.format].read(src.path):
            if isinstance(item, Malformed):
                st.malformed += 1
                if len(st.first_problems) < 5:
                    st.first_problems.append(str(item))
                continue
            records.append((name, item))
    return records, stats


def _ensure_tokenizer(recipe: Recipe, root: Path) -> None:
    from medtune.data.tokenizer import location, train_sentencepiece

    m = recipe.model
    where = Path(location(recipe))
    if m.train_tokenizer is None or where.exists():
        return
    with _locked(root / "tokenizer.lock"):
        if where.exists():
            return
        records, _ = read_sources(recipe)
        texts = [templates.PAPER_PROMPT.format(instruction=r.instruction, input=r.input)
                 + " " + r.output for _, r in records]
        train_sentencepiece(texts, where, m.train_tokenizer.vocab_size)


def _build(recipe: Recipe, recipe_file: str, final: Path, fp: str, log) -> None:
    from datasets import Dataset
    from tqdm import tqdm

    from medtune.data.tokenizer import load as load_tokenizer

    d = recipe.data
    records, stats = read_sources(recipe)
    tokenizer = load_tokenizer(recipe)
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    batch = 256
    for start in tqdm(range(0, len(records), batch), desc="tokenize", unit="batch",
                      disable=len(records) < 10 * batch, leave=False):
        chunk = records[start:start + batch]
        rendered = [templates.render(r, d.template, tokenizer) for _, r in chunk]
        for (name, rec), r, enc in zip(chunk, rendered,
                                       tokenize.encode_batch(rendered, tokenizer, d.max_tokens)):
            st = stats[name]
            st.records += 1
            if enc.prompt_tokens >= d.max_tokens:
                if d.overlong == "truncate":
                    raise RecipeError([
                        f"{recipe_file}: data.max_tokens = {d.max_tokens}: a prompt of source "
                        f"'{name}' has {enc.prompt_tokens} tokens, leaving no room for its answer; "
                        "raise data.max_tokens or set data.overlong: drop"])
                st.dropped += 1
                continue
            if enc.truncated:
                if d.overlong == "drop":
                    st.dropped += 1
                    continue
                st.truncated += 1
            st.tokens += len(enc.input_ids)
            cols["input_ids"].append(enc.input_ids)
            cols["labels"].append(enc.labels)
            cols["length"].append(len(enc.input_ids))
            cols["n_labels"].append(sum(1 for x in enc.labels[1:] if x != tokenize.IGNORE))
            cols["source"].append(name)
            cols["task"].append(rec.task)
    if not cols["length"]:
        raise RecipeError([f"{recipe_file}: data.sources: no usable samples "
                           f"(malformed: {sum(s.malformed for s in stats.values())})"])
    summary = _summary(stats, cols, d.max_tokens, fp)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fp}-", dir=final.parent))
    try:
        import datasets

        datasets.disable_progress_bars()  # ours above is the one that matters
        Dataset.from_dict(cols).save_to_disk(str(tmp / "arrow"))
        (tmp / "stats.json").write_text(json.dumps(summary, indent=2))
        if final.exists():  # an older incomplete build: stats.json was missing
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, st in stats.items():
        for problem in st.first_problems:
            log(f"skipped malformed record: {problem}")
        if st.malformed > len(st.first_problems):
            log(f"... and {st.malformed - len(st.first_problems)} more malformed in '{name}'")


def _summary(stats: dict[str, SourceStats], cols: dict[str, list], max_tokens: int, fp: str) -> dict:
    from medtune.data.packing import pack

    packs = pack(cols["length"], max_tokens)
    total = sum(cols["length"])
    return {
        "fingerprint": fp,
        "samples": len(cols["length"]),
        "tokens": total,
        "label_tokens": sum(cols["n_labels"]),
        "sources": {k: {kk: vv for kk, vv in vars(v).items()} for k, v in stats.items()},
        "tasks": dict(Counter(cols["task"])),
        "packs": len(packs),
        "packing_fill": total / (len(packs) * max_tokens),
    }
